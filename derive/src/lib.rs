//! The derives behind `#[derive(shmsync::Pod, shmsync::Zeroable)]`.
//!
//! They implement bytemuck's `Pod` and `Zeroable` through shmsync's re-export, so a crate
//! that depends on shmsync alone can use them, with the checks bytemuck's own derives
//! make (a `#[repr(C)]` or `#[repr(transparent)]` struct, every field `Pod`, no padding).
//! `Pod` also implements `shmsync::ShmSafe` with a **structural** type tag: a hash of the
//! struct's name and, for each field, its name, offset and the field type's own tag, so
//! the same struct declared in two crates opens the same object and a changed field does
//! not. Use them through shmsync, not from this crate.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields, Member, parse_macro_input};

/// Implements `bytemuck::Pod` and `shmsync::ShmSafe` (with a structural type tag) for a
/// `#[repr(C)]` struct of `Pod` fields without padding. Derive `Zeroable`, `Clone` and
/// `Copy` beside it.
#[proc_macro_derive(Pod)]
pub fn derive_pod(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand_pod(&input).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// Implements `bytemuck::Zeroable` for a struct whose fields are all `Zeroable`.
#[proc_macro_derive(Zeroable)]
pub fn derive_zeroable(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand_zeroable(&input).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// The struct's fields as (member, type), after the checks both derives share.
fn fields_of<'a>(
    input: &'a DeriveInput,
    derive: &str,
) -> syn::Result<Vec<(Member, &'a syn::Type)>> {
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new(
            input.generics.span(),
            format!(
                "shmsync::{derive} cannot be derived for a generic type: its layout must be fixed"
            ),
        ));
    }
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new(
            input.ident.span(),
            format!("shmsync::{derive} can only be derived for structs"),
        ));
    };
    Ok(match &data.fields {
        Fields::Named(named) => named
            .named
            .iter()
            .map(|f| (Member::Named(f.ident.clone().expect("named field")), &f.ty))
            .collect(),
        Fields::Unnamed(unnamed) => unnamed
            .unnamed
            .iter()
            .enumerate()
            .map(|(i, f)| (Member::Unnamed(i.into()), &f.ty))
            .collect(),
        Fields::Unit => Vec::new(),
    })
}

/// Whether the struct is `#[repr(C)]` or `#[repr(transparent)]` (alignment and packing
/// modifiers allowed beside `C`).
fn has_fixed_layout(input: &DeriveInput) -> syn::Result<bool> {
    let mut fixed = false;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("repr")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("C") || meta.path.is_ident("transparent") {
                fixed = true;
            }
            // align(N) and packed(N) carry a value; skip it.
            if meta.input.peek(syn::token::Paren) {
                let _ = meta.input.parse::<Tokens>();
            }
            Ok(())
        })?;
    }
    Ok(fixed)
}

fn expand_pod(input: &DeriveInput) -> syn::Result<Tokens> {
    let fields = fields_of(input, "Pod")?;
    if !has_fixed_layout(input)? {
        return Err(syn::Error::new(
            input.ident.span(),
            "shmsync::Pod needs #[repr(C)] or #[repr(transparent)]: every program that \
             shares the type must agree on its layout",
        ));
    }
    let name = &input.ident;
    let name_text = name.to_string();
    let types: Vec<_> = fields.iter().map(|(_, ty)| *ty).collect();
    let pod_checks = types.iter().map(|ty| {
        quote_spanned! {ty.span()=> __shmsync_assert_pod::<#ty>(); }
    });
    let tag_fields = fields.iter().map(|(member, ty)| {
        let member_text = match member {
            Member::Named(ident) => ident.to_string(),
            Member::Unnamed(index) => index.index.to_string(),
        };
        quote! {
            .field(
                #member_text,
                ::core::mem::offset_of!(#name, #member),
                <#ty as ::shmsync::ShmSafe>::type_tag(),
            )
        }
    });
    Ok(quote! {
        const _: () = {
            // Every field must be Pod itself.
            #[allow(dead_code)]
            fn __shmsync_fields_are_pod() {
                fn __shmsync_assert_pod<T: ::shmsync::Pod>() {}
                #(#pod_checks)*
            }
            // No padding: bytes the compiler leaves undefined cannot be plain data.
            assert!(
                ::core::mem::size_of::<#name>() == 0 #(+ ::core::mem::size_of::<#types>())*,
                concat!("shmsync::Pod: ", #name_text, " has padding; add explicit fields for it"),
            );
        };

        // SAFETY: checked above: a struct with a fixed layout (repr(C) or transparent),
        // made only of Pod fields, with no padding; Zeroable, Copy and 'static are
        // required by Pod's own bounds.
        unsafe impl ::shmsync::bytemuck::Pod for #name {}

        // SAFETY: Pod (above) implies every ShmSafe requirement: fixed layout, valid for
        // every bit pattern, no pointers, no interior mutability.
        unsafe impl ::shmsync::ShmSafe for #name {
            fn type_tag() -> u64 {
                ::shmsync::__derive_Structure::new(#name_text, ::core::mem::size_of::<#name>())
                    #(#tag_fields)*
                    .finish()
            }
        }
    })
}

fn expand_zeroable(input: &DeriveInput) -> syn::Result<Tokens> {
    let fields = fields_of(input, "Zeroable")?;
    let name = &input.ident;
    let checks = fields.iter().map(|(_, ty)| {
        quote_spanned! {ty.span()=> __shmsync_assert_zeroable::<#ty>(); }
    });
    Ok(quote! {
        const _: () = {
            #[allow(dead_code)]
            fn __shmsync_fields_are_zeroable() {
                fn __shmsync_assert_zeroable<T: ::shmsync::Zeroable>() {}
                #(#checks)*
            }
        };

        // SAFETY: every field is Zeroable (checked above), so all-zero bytes are a valid
        // value of the struct.
        unsafe impl ::shmsync::bytemuck::Zeroable for #name {}
    })
}
