//! Attribute macros of the Sluice SDK. Use them through `sluice_sdk`, not directly.
//!
//! Each attribute takes the function's own arguments and, optionally, one more last argument
//! `params: &P` (`P: Deserialize + Describe`): the stage's `params` table, decoded once per
//! distinct value (see `sluice_sdk::__private::take_params`).
//!
//! Each attribute keeps the function as written and adds, next to it, a hidden constant
//! `__sluice_<name>` (a [`NativeFunction`]: describe + call, usable natively) and, when compiling
//! for wasm, what makes it callable by the host: on wasm32-unknown-unknown (ABI 1, a core
//! module) the exports `sluice_describe_<name>` and `sluice_call_<name>` (and the optional
//! `sluice_params_<name>`, `sluice_fallible_<name>`); on wasm32-wasip2 (ABI 2, a component) a
//! static constructor that registers `__sluice_<name>` with the SDK, whose one `call` export
//! dispatches by name.
//!
//! [`NativeFunction`]: ../sluice_sdk/abi/struct.NativeFunction.html

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::{format_ident, quote};
use syn::{Data, DeriveInput, Fields, ItemFn, LitStr, parse_macro_input};

/// Marks `fn(T) -> U` as a map function: one record in, one out. It may return `Result<U, E>`
/// (`E: Display`): an `Err` is that one record's failure, which the stage's `on_error` handles.
#[proc_macro_attribute]
pub fn map(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(attr, item, "map", 1)
}

/// Marks `fn(T) -> impl IntoIterator<Item = U>` as a flat_map function: one record in, any
/// number out (`Vec<U>`, `Option<U>`, an iterator), or `Result` of those (see [`map`]).
#[proc_macro_attribute]
pub fn flat_map(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(attr, item, "flat_map", 1)
}

/// Marks `fn(T) -> bool` as a filter function: keep the record when it returns true (or
/// `Result<bool, E>`, see [`map`]).
#[proc_macro_attribute]
pub fn filter(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(attr, item, "filter", 1)
}

/// Marks `fn(V, V) -> V` as a reduce function. It must be associative and commutative: the host
/// combines within each partition first and across partitions after.
#[proc_macro_attribute]
pub fn reduce(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(attr, item, "reduce", 2)
}

/// Marks `fn(Vec<T>) -> impl IntoIterator<Item = U>` as a map_partitions function: called once
/// per partition with all of its records.
#[proc_macro_attribute]
pub fn map_partitions(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(attr, item, "map_partitions", 1)
}

/// Marks `fn(Vec<T>) -> impl IntoIterator<Item = U>` as a transform function: called once per
/// batch with all of its records (sort, top-k, dedupe across partitions).
#[proc_macro_attribute]
pub fn transform(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(attr, item, "transform", 1)
}

/// Marks `fn(Vec<V>, Option<S>) -> Option<S>` as an update_state function: a key's new values of
/// this batch and its state so far in, its new state out (`None` deletes the key).
#[proc_macro_attribute]
pub fn update_state(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(attr, item, "update_state", 2)
}

/// Marks `fn(T) -> K` as a key_by function: the host pairs each record with its key, `(K, T)`.
#[proc_macro_attribute]
pub fn key_by(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(attr, item, "key_by", 1)
}

/// Marks `fn(T) -> u64` as a timestamp function: a record's event time, in ms since the Unix
/// epoch, for event-time windows.
#[proc_macro_attribute]
pub fn timestamp(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(attr, item, "timestamp", 1)
}

/// Marks `fn(K, Vec<V>, Option<S>) -> (Option<S>, impl IntoIterator<Item = O>)` as a
/// map_with_state function: called for keys with new values, and with no values when a key's
/// state times out; returns the new state (`None` deletes it) and records to emit.
#[proc_macro_attribute]
pub fn map_with_state(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(attr, item, "map_with_state", 3)
}

fn expand(attr: TokenStream, item: TokenStream, kind: &str, arity: usize) -> TokenStream {
    if !attr.is_empty() {
        let attr = proc_macro2::TokenStream::from(attr);
        return syn::Error::new_spanned(attr, format!("#[{kind}] takes no arguments")).to_compile_error().into();
    }
    let function = parse_macro_input!(item as ItemFn);
    let expanded = checked(&function.sig, kind, arity).map(|params| {
        let exports = Exports::of(&function.sig, kind);
        match params {
            None => plain(&function, &exports),
            Some(params) => with_params(&function, &exports, arity, params),
        }
    });
    expanded.unwrap_or_else(|error| error.to_compile_error()).into()
}

/// Checks the signature of a `kind` function of `arity` records; its parameters' type `P`, if
/// it takes `&P` last.
fn checked<'a>(sig: &'a syn::Signature, kind: &str, arity: usize) -> syn::Result<Option<&'a syn::Type>> {
    let params = match sig.inputs.len() {
        n if n == arity => None,
        n if n == arity + 1 => Some(params_type(sig.inputs.last().expect("arity + 1 > 0")).ok_or_else(|| {
            syn::Error::new_spanned(
                sig.inputs.last(),
                format!("a {kind} function's extra last argument is its parameters, taken by reference: `params: &P`"),
            )
        })?),
        n => {
            let shape = ["no arguments", "one argument", "two arguments", "three arguments"][arity];
            return Err(syn::Error::new_spanned(
                &sig.inputs,
                format!("a {kind} function takes {shape} (and optionally its parameters, `&P`, last), found {n}"),
            ));
        }
    };
    let generic_types = sig.generics.params.iter().any(|p| !matches!(p, syn::GenericParam::Lifetime(_)));
    if generic_types || sig.asyncness.is_some() {
        return Err(syn::Error::new_spanned(
            sig,
            format!("a {kind} function cannot be generic (lifetimes aside) or async"),
        ));
    }
    if let Some(syn::FnArg::Receiver(receiver)) = sig.inputs.first() {
        return Err(syn::Error::new_spanned(receiver, format!("a {kind} function takes records, not `self`")));
    }
    Ok(params)
}

/// The names both expansions use.
struct Exports {
    /// `__sluice_<fn>`, the `NativeFunction` constant.
    hidden: syn::Ident,
    name_str: LitStr,
    call_export: LitStr,
    describe_export: LitStr,
    /// The guest runner and describer of the kind (`map` or `map_fallible`, ...).
    run: syn::Ident,
    describe: syn::Ident,
    /// A map, flat_map or filter returning `Result` (an `Err` is that one record's failure),
    /// and its marker export.
    fallible: bool,
    fallible_export: Option<proc_macro2::TokenStream>,
}

impl Exports {
    fn of(sig: &syn::Signature, kind: &str) -> Self {
        let name = &sig.ident;
        let fallible = matches!(kind, "map" | "flat_map" | "filter") && returns_result(&sig.output);
        let runner = if fallible { format!("{kind}_fallible") } else { kind.to_string() };
        let fallible_export = fallible.then(|| {
            let export = LitStr::new(&format!("sluice_fallible_{name}"), Span::call_site());
            quote! {
                #[unsafe(export_name = #export)]
                extern "C" fn fallible() -> u32 {
                    1
                }
            }
        });
        Self {
            hidden: format_ident!("__sluice_{}", name),
            name_str: LitStr::new(&name.to_string(), Span::call_site()),
            call_export: LitStr::new(&format!("sluice_call_{name}"), Span::call_site()),
            describe_export: LitStr::new(&format!("sluice_describe_{name}"), Span::call_site()),
            run: format_ident!("{}", runner),
            describe: format_ident!("describe_{}", runner),
            fallible,
            fallible_export,
        }
    }
}

impl Exports {
    /// What makes the function callable from the host: ABI 1's exports (`wasm1`) on
    /// wasm32-unknown-unknown, ABI 2's registration (`wasm2`) on wasm32-wasip2, nothing natively.
    fn wasm(&self, more: proc_macro2::TokenStream) -> proc_macro2::TokenStream {
        let abi1 = self.wasm1(more);
        let abi2 = self.wasm2();
        quote! { #abi1 #abi2 }
    }

    /// ABI 1's exports: call, describe, and `more` (a params export).
    fn wasm1(&self, more: proc_macro2::TokenStream) -> proc_macro2::TokenStream {
        let Exports { hidden, call_export, describe_export, fallible_export, .. } = self;
        quote! {
            #[cfg(all(target_family = "wasm", not(all(target_os = "wasi", target_env = "p2"))))]
            const _: () = {
                #[unsafe(export_name = #call_export)]
                extern "C" fn call(len: u32) -> u64 {
                    ::sluice_sdk::__private::export_call(len, #hidden.call)
                }
                #[unsafe(export_name = #describe_export)]
                extern "C" fn describe() -> u64 {
                    ::sluice_sdk::__private::export_describe(#hidden.describe)
                }
                #more
                #fallible_export
            };
        }
    }

    /// ABI 2's registration: a static constructor that adds the function (with its params type
    /// and fallible flag, all in `__sluice_<fn>`) to the SDK's registry, which the component's
    /// `describe` and `call` read. wit-bindgen's exports run the constructors once per instance.
    fn wasm2(&self) -> proc_macro2::TokenStream {
        let Exports { hidden, name_str, .. } = self;
        quote! {
            #[cfg(all(target_os = "wasi", target_env = "p2"))]
            const _: () = {
                extern "C" fn register() {
                    ::sluice_sdk::__private::register(#name_str, #hidden);
                }
                #[used]
                #[unsafe(link_section = ".init_array")]
                static REGISTER: extern "C" fn() = register;
            };
        }
    }
}

/// A function of the kind's own shape: its runner and describer take it as it is.
fn plain(function: &ItemFn, exports: &Exports) -> proc_macro2::TokenStream {
    let name = &function.sig.ident;
    let Exports { hidden, name_str, run, describe, fallible, .. } = exports;
    let wasm = exports.wasm(quote! {});
    quote! {
        #function

        #[doc(hidden)]
        #[allow(non_upper_case_globals)]
        pub const #hidden: ::sluice_sdk::abi::NativeFunction = ::sluice_sdk::abi::NativeFunction {
            describe: || ::sluice_sdk::__private::#describe(#name_str, &#name),
            params: None,
            fallible: #fallible,
            call: |input, output| ::sluice_sdk::__private::#run(input, output, #name),
        };

        #wasm
    }
}

/// A function with parameters (`&P` last): a shim of the kind's own shape passes the call's
/// parameters on, so the kind's runner and describer are the same as without.
fn with_params(function: &ItemFn, exports: &Exports, arity: usize, params: &syn::Type) -> proc_macro2::TokenStream {
    let sig = &function.sig;
    let name = &sig.ident;
    let Exports { hidden, name_str, run, describe, fallible, .. } = exports;
    let shim = format_ident!("__sluice_shim_{}", name);
    let slot = format_ident!("__SLUICE_PARAMS_{}", name.to_string().to_uppercase());
    let params_export = LitStr::new(&format!("sluice_params_{name}"), Span::call_site());
    let wasm = exports.wasm(quote! {
        #[unsafe(export_name = #params_export)]
        extern "C" fn params() -> u64 {
            ::sluice_sdk::__private::export_describe(<#params as ::sluice_sdk::Describe>::describe)
        }
    });
    let args: Vec<_> = (0..arity).map(|i| format_ident!("__a{}", i)).collect();
    // `checked` refused a receiver: every argument is typed.
    let types: Vec<_> = sig
        .inputs
        .iter()
        .take(arity)
        .filter_map(|input| match input {
            syn::FnArg::Typed(typed) => Some(typed.ty.clone()),
            syn::FnArg::Receiver(_) => None,
        })
        .collect();
    let generics = &sig.generics;
    let where_clause = &sig.generics.where_clause;
    let output = &sig.output;
    quote! {
        #function

        #[doc(hidden)]
        #[allow(non_snake_case)]
        fn #shim #generics (#(#args: #types),*) #output #where_clause {
            #name(#(#args,)* ::sluice_sdk::__private::current_params(&#slot))
        }

        ::std::thread_local! {
            #[doc(hidden)]
            static #slot: ::sluice_sdk::__private::ParamsSlot<#params> = const { ::sluice_sdk::__private::ParamsSlot::new() };
        }

        #[doc(hidden)]
        #[allow(non_upper_case_globals)]
        pub const #hidden: ::sluice_sdk::abi::NativeFunction = ::sluice_sdk::abi::NativeFunction {
            describe: || ::sluice_sdk::__private::#describe(#name_str, &#shim),
            params: Some(<#params as ::sluice_sdk::Describe>::describe),
            fallible: #fallible,
            call: |input, output| {
                let input = ::sluice_sdk::__private::take_params(input, &#slot)?;
                ::sluice_sdk::__private::#run(input, output, #shim)
            },
        };

        #wasm
    }
}

/// Whether the function returns `Result<..>`, judged by the type's last path segment (a
/// `Result` alias of another shape fails the runner's bounds with a type error).
fn returns_result(output: &syn::ReturnType) -> bool {
    let syn::ReturnType::Type(_, ty) = output else { return false };
    let syn::Type::Path(path) = &**ty else { return false };
    path.path.segments.last().is_some_and(|segment| segment.ident == "Result")
}

/// `P` of a last argument `name: &P`.
fn params_type(input: &syn::FnArg) -> Option<&syn::Type> {
    let syn::FnArg::Typed(typed) = input else { return None };
    match &*typed.ty {
        syn::Type::Reference(reference) if reference.mutability.is_none() => Some(&reference.elem),
        _ => None,
    }
}

/// Derives `sluice_sdk::Describe` for a struct or an enum (unit, tuple and struct variants), so
/// it can be a record, key or value. Use it beside serde's `Serialize`/`Deserialize` (with
/// serde's default, externally tagged, representation); field and variant order is the wire
/// order.
#[proc_macro_derive(Describe)]
pub fn derive_describe(item: TokenStream) -> TokenStream {
    let input = parse_macro_input!(item as DeriveInput);
    let name = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let name_str = LitStr::new(&name.to_string(), Span::call_site());
    let body = match &input.data {
        Data::Struct(data) => {
            match &data.fields {
                Fields::Named(fields) => {
                    let entries = fields.named.iter().map(|field| {
                    let field_name =
                        LitStr::new(&field.ident.as_ref().map(|i| i.to_string()).unwrap_or_default(), Span::call_site());
                    let ty = &field.ty;
                    quote! { (::std::string::String::from(#field_name), <#ty as ::sluice_sdk::Describe>::describe()) }
                });
                    quote! {
                        ::sluice_sdk::TypeDesc::Struct {
                            name: ::std::string::String::from(#name_str),
                            fields: ::std::vec![#(#entries),*],
                        }
                    }
                }
                // serde encodes a newtype struct as its inner value.
                Fields::Unnamed(fields) if fields.unnamed.len() == 1 => {
                    let ty = &fields.unnamed[0].ty;
                    quote! { <#ty as ::sluice_sdk::Describe>::describe() }
                }
                Fields::Unnamed(fields) => {
                    let items = fields.unnamed.iter().map(|field| {
                        let ty = &field.ty;
                        quote! { <#ty as ::sluice_sdk::Describe>::describe() }
                    });
                    quote! { ::sluice_sdk::TypeDesc::Tuple(::std::vec![#(#items),*]) }
                }
                Fields::Unit => quote! { ::sluice_sdk::TypeDesc::Unit },
            }
        }
        Data::Enum(data) => {
            let variants = data.variants.iter().map(|variant| {
                let variant_name = LitStr::new(&variant.ident.to_string(), Span::call_site());
                let describe = |ty: &syn::Type| quote! { <#ty as ::sluice_sdk::Describe>::describe() };
                let shape = match &variant.fields {
                    Fields::Unit => quote! { ::sluice_sdk::Variant::Unit },
                    Fields::Unnamed(fields) if fields.unnamed.len() == 1 => {
                        let ty = describe(&fields.unnamed[0].ty);
                        quote! { ::sluice_sdk::Variant::Newtype(#ty) }
                    }
                    Fields::Unnamed(fields) => {
                        let items = fields.unnamed.iter().map(|field| describe(&field.ty));
                        quote! { ::sluice_sdk::Variant::Tuple(::std::vec![#(#items),*]) }
                    }
                    Fields::Named(fields) => {
                        let entries = fields.named.iter().map(|field| {
                            let field_name = LitStr::new(
                                &field.ident.as_ref().map(|i| i.to_string()).unwrap_or_default(),
                                Span::call_site(),
                            );
                            let ty = describe(&field.ty);
                            quote! { (::std::string::String::from(#field_name), #ty) }
                        });
                        quote! { ::sluice_sdk::Variant::Struct(::std::vec![#(#entries),*]) }
                    }
                };
                quote! { (::std::string::String::from(#variant_name), #shape) }
            });
            quote! {
                ::sluice_sdk::TypeDesc::Enum {
                    name: ::std::string::String::from(#name_str),
                    variants: ::std::vec![#(#variants),*],
                }
            }
        }
        Data::Union(_) => {
            return syn::Error::new_spanned(name, "Describe cannot be derived for unions").to_compile_error().into();
        }
    };
    quote! {
        impl #impl_generics ::sluice_sdk::Describe for #name #ty_generics #where_clause {
            fn describe() -> ::sluice_sdk::TypeDesc {
                #body
            }
        }
    }
    .into()
}
