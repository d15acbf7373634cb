//! ABI 2: a plugin as a WebAssembly component (target `wasm32-wasip2`), shared by the SDK
//! (guest side) and the engine (host side).
//!
//! The contract is the WIT package `sdk/wit/sluice.wit` ([`PACKAGE`]): the world `plugin`
//! imports `host` (`log`, `metric`, `panic`) and exports [`EXPORT_FUNCTIONS`] (`describe`,
//! `call`). What this module owns is the part WIT cannot say: how a recursive [`TypeDesc`]
//! travels as the flat `list<type-node>` of the WIT `type-desc`, in both directions
//! ([`flatten`], [`unflatten`]), so that a host reads the descriptions of components written in
//! any language the same way.
//!
//! # Bytes
//! The bytes `call` takes and returns are exactly ABI 1's (see [`crate::abi`]): the same frames,
//! the same per-kind layouts, the parameters frame first for a function that takes parameters,
//! and the fallible trailer. Only the transport changes: one `call(function, input)` per
//! partition instead of per-function exports over a shared buffer, and an `Err(message)` instead
//! of the packed error flag.
//!
//! # Node lists
//! - A type is a non-empty list of [`TypeNode`]s. Node 0 is the root; a node refers to its
//!   children by their index in the same list.
//! - Every index is in range, no node is its own ancestor (no cycles), and every node is
//!   reachable from the root: a list written root-last fails with a message saying so.
//! - A node may be referred to more than once (a shared subtree): [`unflatten`] expands it, up to
//!   [`MAX_EXPANDED_NODES`] nodes in all and [`MAX_DEPTH`] levels deep, so a small list cannot
//!   expand into an enormous or stack-exhausting tree.
//! - An integer's width is 8, 16, 32, 64 or 128 bits.
//!
//! [`flatten`] writes each node before its children (pre-order) and never shares subtrees.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::describe::{TypeDesc, Variant};

/// The WIT package of this ABI, with its version.
pub const PACKAGE: &str = "sluice:plugin@2.0.0";
/// The interface a plugin exports: `describe` and `call`.
pub const EXPORT_FUNCTIONS: &str = "sluice:plugin/functions@2.0.0";
/// The major version a host accepts (a component's export `sluice:plugin/functions@X.Y.Z`).
pub const VERSION_MAJOR: u32 = 2;
/// Most levels a type may nest, root included.
pub const MAX_DEPTH: usize = 128;
/// Most nodes a type may expand to once shared nodes are repeated.
pub const MAX_EXPANDED_NODES: usize = 1 << 16;
/// Most bytes of names (of structs, enums, fields, variants) a type may expand to once shared
/// nodes are repeated: a small description cannot make the host copy a long name many times.
pub const MAX_EXPANDED_NAME_BYTES: usize = 1 << 20;

/// One node of a flattened type: the WIT `type-node`, case for case. Children are indices into
/// the same list.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TypeNode {
    /// `()`.
    Unit,
    /// `bool`.
    Boolean,
    /// An unsigned integer of this many bits.
    Unsigned(u8),
    /// A signed integer of this many bits.
    Signed(u8),
    /// `f32`.
    Float32,
    /// `f64`.
    Float64,
    /// `char`.
    Char,
    /// A string.
    Text,
    /// A byte string.
    Bytes,
    /// `Option` of the node.
    Option(u32),
    /// A sequence of the node.
    Seq(u32),
    /// The nodes back to back.
    Tuple(Vec<u32>),
    /// A struct: its name and fields.
    Structure(String, Vec<Field>),
    /// A map from the first node to the second.
    Map(u32, u32),
    /// An enum: its name and variants.
    Enumeration(String, Vec<VariantDesc>),
}

/// A named field and its type's node: the WIT `field`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Field {
    /// The field's name.
    pub name: String,
    /// Its type's node.
    pub ty: u32,
}

/// The fields of one variant: the WIT `variant-shape`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum VariantShape {
    /// `A`.
    Unit,
    /// `A(T)`.
    Newtype(u32),
    /// `A(T, U, ...)`.
    Tuple(Vec<u32>),
    /// `A { x: T, ... }`.
    Fields(Vec<Field>),
}

/// One variant of an enum, at its position: the WIT `variant-desc`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VariantDesc {
    /// The variant's name.
    pub name: String,
    /// Its fields.
    pub shape: VariantShape,
}

/// `desc` as a node list, the root first.
pub fn flatten(desc: &TypeDesc) -> Vec<TypeNode> {
    let mut nodes = Vec::new();
    push(desc, &mut nodes);
    nodes
}

/// Appends `desc`'s node, then its children's; the index of its node.
fn push(desc: &TypeDesc, nodes: &mut Vec<TypeNode>) -> u32 {
    let at = nodes.len();
    nodes.push(TypeNode::Unit); // a placeholder until the children have their indices
    let node = match desc {
        TypeDesc::Unit => TypeNode::Unit,
        TypeDesc::Bool => TypeNode::Boolean,
        TypeDesc::Unsigned(bits) => TypeNode::Unsigned(*bits),
        TypeDesc::Signed(bits) => TypeNode::Signed(*bits),
        TypeDesc::F32 => TypeNode::Float32,
        TypeDesc::F64 => TypeNode::Float64,
        TypeDesc::Char => TypeNode::Char,
        TypeDesc::String => TypeNode::Text,
        TypeDesc::Bytes => TypeNode::Bytes,
        TypeDesc::Option(inner) => TypeNode::Option(push(inner, nodes)),
        TypeDesc::Seq(inner) => TypeNode::Seq(push(inner, nodes)),
        TypeDesc::Tuple(items) => TypeNode::Tuple(items.iter().map(|item| push(item, nodes)).collect()),
        TypeDesc::Struct { name, fields } => TypeNode::Structure(name.clone(), push_fields(fields, nodes)),
        TypeDesc::Map(key, value) => {
            let key = push(key, nodes);
            TypeNode::Map(key, push(value, nodes))
        }
        TypeDesc::Enum { name, variants } => {
            let variants = variants
                .iter()
                .map(|(name, variant)| VariantDesc { name: name.clone(), shape: push_variant(variant, nodes) })
                .collect();
            TypeNode::Enumeration(name.clone(), variants)
        }
    };
    nodes[at] = node;
    // A type with 2^32 nodes cannot be described in memory to begin with.
    at as u32
}

fn push_fields(fields: &[(String, TypeDesc)], nodes: &mut Vec<TypeNode>) -> Vec<Field> {
    fields.iter().map(|(name, ty)| Field { name: name.clone(), ty: push(ty, nodes) }).collect()
}

fn push_variant(variant: &Variant, nodes: &mut Vec<TypeNode>) -> VariantShape {
    match variant {
        Variant::Unit => VariantShape::Unit,
        Variant::Newtype(ty) => VariantShape::Newtype(push(ty, nodes)),
        Variant::Tuple(items) => VariantShape::Tuple(items.iter().map(|item| push(item, nodes)).collect()),
        Variant::Struct(fields) => VariantShape::Fields(push_fields(fields, nodes)),
    }
}

/// The type a node list describes, node 0 its root; an error naming the offending node when
/// the list breaks a rule of the module docs (an index out of range, a cycle, a node the root
/// does not reach, too deep or too large, an integer width that does not exist).
pub fn unflatten(nodes: &[TypeNode]) -> Result<TypeDesc, String> {
    if nodes.is_empty() {
        return Err("the type has no nodes (node 0 is its root)".into());
    }
    let mut walk =
        Walk { nodes, reached: vec![false; nodes.len()], open: vec![false; nodes.len()], expanded: 0, names: 0 };
    let desc = walk.node(0, 1)?;
    if let Some(lost) = walk.reached.iter().position(|reached| !reached) {
        return Err(format!(
            "node {lost} is not reachable from node 0, the root (the root comes first, its descendants after it)"
        ));
    }
    Ok(desc)
}

/// The state of one [`unflatten`]: which nodes were reached, which are on the path from the
/// root (a reference to one of them is a cycle), how many nodes the tree has so far.
struct Walk<'a> {
    nodes: &'a [TypeNode],
    reached: Vec<bool>,
    open: Vec<bool>,
    expanded: usize,
    /// Name bytes copied so far.
    names: usize,
}

impl Walk<'_> {
    /// The child `to` of node `from`, at level `depth` (the root is level 1).
    fn child(&mut self, from: usize, to: u32, depth: usize) -> Result<TypeDesc, String> {
        let to = to as usize;
        if to >= self.nodes.len() {
            return Err(format!("node {from} refers to node {to}, but the type has {} nodes", self.nodes.len()));
        }
        if self.open[to] {
            return Err(format!("node {from} refers to node {to}, one of its ancestors: a cycle"));
        }
        if depth > MAX_DEPTH {
            return Err(format!("node {from} nests deeper than {MAX_DEPTH} levels"));
        }
        self.node(to, depth)
    }

    /// Node `at` as a type, at level `depth`.
    fn node(&mut self, at: usize, depth: usize) -> Result<TypeDesc, String> {
        self.expanded += 1;
        if self.expanded > MAX_EXPANDED_NODES {
            return Err(format!("the type expands to more than {MAX_EXPANDED_NODES} nodes"));
        }
        self.reached[at] = true;
        self.open[at] = true;
        let desc = self.node_desc(at, depth + 1)?;
        self.open[at] = false;
        Ok(desc)
    }

    /// Node `at` as a type, its children at level `depth`.
    fn node_desc(&mut self, at: usize, depth: usize) -> Result<TypeDesc, String> {
        let nodes = self.nodes;
        Ok(match &nodes[at] {
            TypeNode::Unit => TypeDesc::Unit,
            TypeNode::Boolean => TypeDesc::Bool,
            TypeNode::Unsigned(bits) => TypeDesc::Unsigned(width(at, *bits)?),
            TypeNode::Signed(bits) => TypeDesc::Signed(width(at, *bits)?),
            TypeNode::Float32 => TypeDesc::F32,
            TypeNode::Float64 => TypeDesc::F64,
            TypeNode::Char => TypeDesc::Char,
            TypeNode::Text => TypeDesc::String,
            TypeNode::Bytes => TypeDesc::Bytes,
            TypeNode::Option(inner) => TypeDesc::Option(self.boxed(at, *inner, depth)?),
            TypeNode::Seq(inner) => TypeDesc::Seq(self.boxed(at, *inner, depth)?),
            TypeNode::Tuple(items) => TypeDesc::Tuple(self.children(at, items, depth)?),
            TypeNode::Structure(name, fields) => {
                TypeDesc::Struct { name: self.name(at, name)?, fields: self.fields(at, fields, depth)? }
            }
            TypeNode::Map(key, value) => TypeDesc::Map(self.boxed(at, *key, depth)?, self.boxed(at, *value, depth)?),
            TypeNode::Enumeration(name, variants) => {
                let variants = variants
                    .iter()
                    .map(|variant| Ok((self.name(at, &variant.name)?, self.variant(at, &variant.shape, depth)?)))
                    .collect::<Result<_, String>>()?;
                TypeDesc::Enum { name: self.name(at, name)?, variants }
            }
        })
    }

    fn boxed(&mut self, from: usize, to: u32, depth: usize) -> Result<Box<TypeDesc>, String> {
        self.child(from, to, depth).map(Box::new)
    }

    fn children(&mut self, from: usize, items: &[u32], depth: usize) -> Result<Vec<TypeDesc>, String> {
        items.iter().map(|item| self.child(from, *item, depth)).collect()
    }

    fn fields(&mut self, from: usize, fields: &[Field], depth: usize) -> Result<Vec<(String, TypeDesc)>, String> {
        fields.iter().map(|field| Ok((self.name(from, &field.name)?, self.child(from, field.ty, depth)?))).collect()
    }

    /// A name of node `at`, counted against [`MAX_EXPANDED_NAME_BYTES`].
    fn name(&mut self, at: usize, name: &str) -> Result<String, String> {
        self.names += name.len();
        if self.names > MAX_EXPANDED_NAME_BYTES {
            return Err(format!("node {at}: the type's names expand to more than {MAX_EXPANDED_NAME_BYTES} bytes"));
        }
        Ok(name.to_string())
    }

    fn variant(&mut self, from: usize, shape: &VariantShape, depth: usize) -> Result<Variant, String> {
        Ok(match shape {
            VariantShape::Unit => Variant::Unit,
            VariantShape::Newtype(ty) => Variant::Newtype(self.child(from, *ty, depth)?),
            VariantShape::Tuple(items) => Variant::Tuple(self.children(from, items, depth)?),
            VariantShape::Fields(fields) => Variant::Struct(self.fields(from, fields, depth)?),
        })
    }
}

/// `bits` if an integer can be that wide.
fn width(at: usize, bits: u8) -> Result<u8, String> {
    match bits {
        8 | 16 | 32 | 64 | 128 => Ok(bits),
        _ => Err(format!("node {at} is an integer of {bits} bits; the widths are 8, 16, 32, 64 and 128")),
    }
}

#[cfg(test)]
mod tests;
