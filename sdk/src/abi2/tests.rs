use super::*;
use crate::Describe;

fn round_trip(desc: TypeDesc) {
    let nodes = flatten(&desc);
    assert_eq!(unflatten(&nodes), Ok(desc.clone()), "{desc} as {nodes:?}");
}

fn named(fields: &[(&str, TypeDesc)]) -> Vec<(String, TypeDesc)> {
    fields.iter().map(|(name, ty)| ((*name).into(), ty.clone())).collect()
}

#[test]
fn every_type_desc_variant_round_trips() {
    let scalars = [
        TypeDesc::Unit,
        TypeDesc::Bool,
        TypeDesc::Unsigned(8),
        TypeDesc::Unsigned(128),
        TypeDesc::Signed(16),
        TypeDesc::Signed(64),
        TypeDesc::F32,
        TypeDesc::F64,
        TypeDesc::Char,
        TypeDesc::String,
        TypeDesc::Bytes,
    ];
    for scalar in scalars.iter().cloned() {
        round_trip(scalar.clone());
        round_trip(TypeDesc::Option(Box::new(scalar.clone())));
        round_trip(TypeDesc::Seq(Box::new(scalar)));
    }
    round_trip(TypeDesc::Tuple(vec![]));
    round_trip(TypeDesc::Tuple(scalars.to_vec()));
    round_trip(TypeDesc::Map(Box::new(TypeDesc::String), Box::new(TypeDesc::Seq(Box::new(TypeDesc::F64)))));
    round_trip(TypeDesc::Struct { name: "Empty".into(), fields: vec![] });
    round_trip(TypeDesc::Struct {
        name: "Click".into(),
        fields: named(&[("user", TypeDesc::String), ("at", TypeDesc::Option(Box::new(TypeDesc::Unsigned(64))))]),
    });
    round_trip(TypeDesc::Enum { name: "Never".into(), variants: vec![] });
    round_trip(TypeDesc::Enum {
        name: "Event".into(),
        variants: vec![
            ("Tick".into(), Variant::Unit),
            ("Word".into(), Variant::Newtype(TypeDesc::String)),
            ("Pair".into(), Variant::Tuple(vec![TypeDesc::String, TypeDesc::Unsigned(32)])),
            ("Many".into(), Variant::Struct(named(&[("count", TypeDesc::Unsigned(32)), ("first", TypeDesc::Char)]))),
        ],
    });
}

#[test]
fn a_deep_described_type_round_trips() {
    type Deep = Vec<(String, Option<[u16; 3]>, std::collections::BTreeMap<i8, Vec<bool>>)>;
    round_trip(<Deep as Describe>::describe());
}

#[test]
fn flatten_puts_the_root_first_and_children_after_it() {
    let pair = <(String, u64)>::describe();
    assert_eq!(flatten(&pair), vec![TypeNode::Tuple(vec![1, 2]), TypeNode::Text, TypeNode::Unsigned(64)]);
    let nested = TypeDesc::Map(Box::new(TypeDesc::Option(Box::new(TypeDesc::Bool))), Box::new(TypeDesc::Unit));
    assert_eq!(flatten(&nested), vec![TypeNode::Map(1, 3), TypeNode::Option(2), TypeNode::Boolean, TypeNode::Unit]);
}

#[test]
fn shared_nodes_expand_into_copies() {
    let nodes = [TypeNode::Tuple(vec![1, 1]), TypeNode::Text];
    assert_eq!(unflatten(&nodes), Ok(TypeDesc::Tuple(vec![TypeDesc::String, TypeDesc::String])));
}

#[test]
fn an_index_out_of_range_is_refused() {
    let nodes = [TypeNode::Tuple(vec![1, 2]), TypeNode::Text];
    assert_eq!(unflatten(&nodes), Err("node 0 refers to node 2, but the type has 2 nodes".into()));
    let field = [TypeNode::Structure("S".into(), vec![Field { name: "x".into(), ty: 9 }])];
    assert!(unflatten(&field).unwrap_err().starts_with("node 0 refers to node 9"));
    let variant = [TypeNode::Enumeration(
        "E".into(),
        vec![VariantDesc { name: "A".into(), shape: VariantShape::Newtype(u32::MAX) }],
    )];
    assert!(unflatten(&variant).unwrap_err().starts_with("node 0 refers to node 4294967295"));
}

#[test]
fn a_cycle_is_refused() {
    let itself = [TypeNode::Option(0)];
    assert_eq!(unflatten(&itself), Err("node 0 refers to node 0, one of its ancestors: a cycle".into()));
    let longer = [TypeNode::Seq(1), TypeNode::Tuple(vec![2]), TypeNode::Map(1, 1)];
    assert_eq!(unflatten(&longer), Err("node 2 refers to node 1, one of its ancestors: a cycle".into()));
}

#[test]
fn a_root_last_list_is_refused() {
    // `(String, u64)` written the other way round: node 0 is then a lone string.
    let nodes = [TypeNode::Text, TypeNode::Unsigned(64), TypeNode::Tuple(vec![0, 1])];
    let error = unflatten(&nodes).unwrap_err();
    assert!(error.starts_with("node 1 is not reachable from node 0, the root"), "{error}");
}

#[test]
fn an_empty_list_is_refused() {
    assert_eq!(unflatten(&[]), Err("the type has no nodes (node 0 is its root)".into()));
}

#[test]
fn depth_is_bounded() {
    let chain = |levels: usize| {
        let mut nodes: Vec<TypeNode> = (1..levels as u32).map(TypeNode::Option).collect();
        nodes.push(TypeNode::Unit);
        nodes
    };
    assert!(unflatten(&chain(MAX_DEPTH)).is_ok());
    let error = unflatten(&chain(MAX_DEPTH + 1)).unwrap_err();
    assert_eq!(error, format!("node {} nests deeper than {MAX_DEPTH} levels", MAX_DEPTH - 1));
}

#[test]
fn expansion_is_bounded() {
    // Each node is a pair of the next: 40 nodes that would expand to 2^40.
    let mut nodes: Vec<TypeNode> = (1..40).map(|next| TypeNode::Tuple(vec![next, next])).collect();
    nodes.push(TypeNode::Unit);
    assert_eq!(unflatten(&nodes), Err(format!("the type expands to more than {MAX_EXPANDED_NODES} nodes")));
}

#[test]
fn names_repeated_by_shared_nodes_are_bounded_in_bytes() {
    // A few thousand references to one struct with a long name: few nodes, many name bytes.
    let long = "n".repeat(64 * 1024);
    let nodes = vec![TypeNode::Tuple(vec![1; 100]), TypeNode::Structure(long, Vec::new())];
    let error = unflatten(&nodes).unwrap_err();
    assert!(error.contains(&format!("more than {MAX_EXPANDED_NAME_BYTES} bytes")), "{error}");
}

#[test]
fn integer_widths_are_checked() {
    assert_eq!(unflatten(&[TypeNode::Signed(128)]), Ok(TypeDesc::Signed(128)));
    let error = unflatten(&[TypeNode::Unsigned(7)]).unwrap_err();
    assert_eq!(error, "node 0 is an integer of 7 bits; the widths are 8, 16, 32, 64 and 128");
}
