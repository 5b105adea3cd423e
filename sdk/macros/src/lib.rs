//! Proc-macros re-exported by the mortar SDK (`mortar::handler`). Module authors never name this
//! crate; the code it generates names only `::mortar` paths.

use proc_macro::TokenStream;
use quote::quote;
use syn::{
    Ident, ItemFn, LitStr, Token,
    parse::{Parse, ParseStream},
    parse_macro_input,
};

/// `#[handler("main.sub")]`, `#[handler("main.sub", public)]` or
/// `#[handler("main.sub", internal)]`, each optionally with `key = field` (routed by that request
/// field), on an `async fn(Ctx, Req) -> Result<Resp, Code>` (or `Result<Resp, Failure>`).
struct HandlerArgs {
    route: LitStr,
    internal: bool,
    public: bool,
    key: Option<Ident>,
}

impl Parse for HandlerArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let route: LitStr = input.parse()?;
        let mut args = Self { route, internal: false, public: false, key: None };
        while input.peek(Token![,]) {
            input.parse::<Token![,]>()?;
            let flag: Ident = input.parse()?;
            if flag == "internal" && !args.public {
                args.internal = true;
            } else if flag == "public" && !args.internal {
                args.public = true;
            } else if flag == "key" && args.key.is_none() {
                input.parse::<Token![=]>()?;
                args.key = Some(input.parse()?);
            } else {
                return Err(syn::Error::new(
                    flag.span(),
                    "expected `public` (clients need not be logged in) or `internal` (only other modules), and `key = field` (routed by that request field), each at most once",
                ));
            }
        }
        if !input.is_empty() {
            return Err(input.error("unexpected tokens after the route"));
        }
        Ok(args)
    }
}

/// Checks a route against the protocol's rule: lower-case `main.sub`, each part `[a-z0-9_]+` and
/// starting with a letter; `sys` is the gateway's own.
fn check_route(route: &str) -> Result<(), String> {
    let Some((main, sub)) = route.split_once('.') else {
        return Err(format!("route `{route}` must be `main.sub`"));
    };
    for part in [main, sub] {
        let valid = part.starts_with(|c: char| c.is_ascii_lowercase())
            && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(format!(
                "route `{route}`: `{part}` must be lower-case letters, digits and `_`, starting with a letter"
            ));
        }
    }
    if main == "sys" {
        return Err("routes under `sys.` are answered by the gateway itself".into());
    }
    Ok(())
}

/// The form every handler has, for error messages.
const EXPECTED: &str = "a handler is `async fn(ctx: Ctx, req: Req) -> Result<Resp, Code>` (or `Result<Resp, Failure>` to give a reason with the code), with `Req` and `Resp` messages of the module's protos";

/// Checks a handler's signature before the compiler does: its errors would point into the SDK.
fn check_signature(sig: &syn::Signature) -> syn::Result<()> {
    let args: Vec<&syn::FnArg> = sig.inputs.iter().collect();
    let [ctx, _req] = args.as_slice() else {
        return Err(syn::Error::new_spanned(
            &sig.inputs,
            format!("{EXPECTED}: this one takes {} argument(s)", args.len()),
        ));
    };
    match ctx {
        syn::FnArg::Typed(arg) if last_segment(&arg.ty).is_some_and(|s| s.ident == "Ctx") => {}
        other => {
            return Err(syn::Error::new_spanned(
                other,
                format!("{EXPECTED}: the first argument must be the `Ctx`"),
            ));
        }
    }
    let syn::ReturnType::Type(_, output) = &sig.output else {
        return Err(syn::Error::new_spanned(&sig.ident, format!("{EXPECTED}: this one returns nothing")));
    };
    let returns_result_code_or_failure = last_segment(output)
        .filter(|segment| segment.ident == "Result")
        .and_then(|segment| match &segment.arguments {
            syn::PathArguments::AngleBracketed(args) if args.args.len() == 2 => args.args.last(),
            _ => None,
        })
        .is_some_and(|error| {
            matches!(error, syn::GenericArgument::Type(ty)
                if last_segment(ty).is_some_and(|s| s.ident == "Code" || s.ident == "Failure"))
        });
    if !returns_result_code_or_failure {
        let found = quote!(#output).to_string().replace(" < ", "<").replace(" >", ">").replace(" ,", ",");
        return Err(syn::Error::new_spanned(output, format!("{EXPECTED}: this one returns `{found}`")));
    }
    Ok(())
}

/// The last segment of a plain type path (`mortar::Ctx` → `Ctx`).
fn last_segment(ty: &syn::Type) -> Option<&syn::PathSegment> {
    match ty {
        syn::Type::Path(path) if path.qself.is_none() => path.path.segments.last(),
        _ => None,
    }
}

/// Registers an `async fn(Ctx, Req) -> Result<Resp, Code>` (or `-> Result<Resp, Failure>`, to
/// answer `Err(Code::BAD_REQUEST.because("…"))` with a reason) as the handler of a route.
///
/// `#[handler("pack.query")]` makes a client route for logged-in sessions (others get
/// `NOT_LOGGED_IN`); `#[handler("user.login", public)]` one every client may call;
/// `#[handler("pack.add_items", internal)]` a route only other modules can call.
/// `#[handler("arena.move", key = room_id)]` routes by the request's `room_id` field: every
/// request with one value reaches one worker among those serving the module (a room's state lives
/// there), whoever sends it; the node refuses to start when the request has no such string or
/// integer field. The function stays as written; the macro adds the glue that
/// decodes the request (answering `BAD_REQUEST` without calling the function when it does not
/// decode) and encodes the reply, and submits the route to the SDK's route registry.
#[proc_macro_attribute]
pub fn handler(attr: TokenStream, item: TokenStream) -> TokenStream {
    let args = parse_macro_input!(attr as HandlerArgs);
    let function = parse_macro_input!(item as ItemFn);
    if let Err(reason) = check_route(&args.route.value()) {
        return syn::Error::new(args.route.span(), reason).to_compile_error().into();
    }
    if function.sig.asyncness.is_none() {
        return syn::Error::new(function.sig.ident.span(), "a handler must be an `async fn`")
            .to_compile_error()
            .into();
    }
    if let Err(error) = check_signature(&function.sig) {
        return error.to_compile_error().into();
    }
    let name = &function.sig.ident;
    let route = &args.route;
    let key = match &args.key {
        Some(field) => {
            let field = field.to_string();
            let field = field.strip_prefix("r#").unwrap_or(&field);
            quote!(::core::option::Option::Some(#field))
        }
        None => quote!(::core::option::Option::None),
    };
    let access = if args.internal {
        quote!(::mortar::route::Access::Internal)
    } else if args.public {
        quote!(::mortar::route::Access::Public)
    } else {
        quote!(::mortar::route::Access::Client)
    };
    quote! {
        #function

        const _: () = {
            fn shim(
                invocation: ::mortar::ctx::Invocation,
                body: ::mortar::bytes::Bytes,
            ) -> ::mortar::route::HandlerFuture {
                ::mortar::route::dispatch(invocation, body, #name)
            }
            fn types() -> ::mortar::route::MessageTypes {
                ::mortar::route::message_types(#name)
            }
            ::mortar::inventory::submit! {
                ::mortar::route::Route {
                    path: #route,
                    access: #access,
                    handler: shim,
                    types,
                    defined_at: concat!(module_path!(), "::", stringify!(#name)),
                    key: #key,
                }
            }
        };
    }
    .into()
}

/// Implements `mortar::store::Document` for a struct:
///
/// ```ignore
/// #[derive(Serialize, Deserialize, Default, mortar::Document)]
/// #[document(collection = "pack", index(unique = "account"), index(lookup = "guild"))]
/// struct Pack { account: String, guild: u64, items: Vec<Slot> }
/// ```
///
/// `collection` is required (lower-case letters, digits and `_`, starting with a letter); each
/// `index` names a field of the struct, `unique` or `lookup`; each
/// `sorted(name = "by_score", fields("board", "score", "at"))` declares a sorted index on those
/// fields, most significant first. An index is on the name serde stores
/// the field under (its `#[serde(rename = "…")]`, or the struct's `rename_all`). A non-generic type is also
/// registered (`mortar::store::declared`), so backends prepare its collection when a node starts.
#[proc_macro_derive(Document, attributes(document))]
pub fn derive_document(item: TokenStream) -> TokenStream {
    let input = parse_macro_input!(item as syn::DeriveInput);
    match document(&input) {
        Ok(tokens) => tokens.into(),
        Err(error) => error.to_compile_error().into(),
    }
}

fn document(input: &syn::DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    let syn::Data::Struct(data) = &input.data else {
        return Err(syn::Error::new_spanned(&input.ident, "a Document is a struct with named fields"));
    };
    let rename_all = serde_rename(&input.attrs, "rename_all")?;
    // Each field's Rust name and the name serde stores it under, which the store indexes.
    let mut fields: Vec<(String, String)> = Vec::new();
    for field in &data.fields {
        let Some(ident) = &field.ident else { continue };
        let rust = ident.to_string().trim_start_matches("r#").to_owned();
        let stored = match serde_rename(&field.attrs, "rename")? {
            Some(renamed) => renamed,
            None => match &rename_all {
                Some(rule) => apply_rename_all(rule, &rust).ok_or_else(|| {
                    syn::Error::new_spanned(&input.ident, format!("unknown serde rename_all rule {rule:?}"))
                })?,
                None => rust.clone(),
            },
        };
        fields.push((rust, stored));
    }
    let stored_name = |field: &LitStr| match fields.iter().find(|(rust, _)| *rust == field.value()) {
        Some((_, stored)) => Ok(LitStr::new(stored, field.span())),
        None => {
            Err(syn::Error::new(field.span(), format!("`{}` is not a field of this struct", field.value())))
        }
    };
    let mut collection: Option<LitStr> = None;
    let mut indexes = Vec::new();
    let mut sorted: Vec<(LitStr, Vec<LitStr>)> = Vec::new();
    for attr in input.attrs.iter().filter(|attr| attr.path().is_ident("document")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("collection") {
                collection = Some(meta.value()?.parse()?);
                Ok(())
            } else if meta.path.is_ident("index") {
                meta.parse_nested_meta(|index| {
                    let unique = if index.path.is_ident("unique") {
                        true
                    } else if index.path.is_ident("lookup") {
                        false
                    } else {
                        return Err(index.error("expected `unique = \"field\"` or `lookup = \"field\"`"));
                    };
                    let field: LitStr = index.value()?.parse()?;
                    indexes.push((unique, stored_name(&field)?));
                    Ok(())
                })
            } else if meta.path.is_ident("sorted") {
                let (mut name, mut on) = (None::<LitStr>, Vec::new());
                meta.parse_nested_meta(|part| {
                    if part.path.is_ident("name") {
                        name = Some(part.value()?.parse()?);
                        Ok(())
                    } else if part.path.is_ident("fields") {
                        let content;
                        syn::parenthesized!(content in part.input);
                        let listed =
                            content.parse_terminated(<LitStr as syn::parse::Parse>::parse, syn::Token![,])?;
                        for field in &listed {
                            on.push(stored_name(field)?);
                        }
                        Ok(())
                    } else {
                        Err(part.error("expected `name = \"index\"` or `fields(\"field\", …)`"))
                    }
                })?;
                let name = name.ok_or_else(|| meta.error("a sorted index needs `name = \"…\"`"))?;
                if !valid_name(&name.value()) {
                    return Err(syn::Error::new(
                        name.span(),
                        "a sorted index's name is lower-case letters, digits and `_`, starting with a letter",
                    ));
                }
                if on.is_empty() {
                    return Err(meta.error("a sorted index needs `fields(\"field\", …)`"));
                }
                if sorted.iter().any(|(other, _)| other.value() == name.value()) {
                    return Err(syn::Error::new(name.span(), "two sorted indexes with one name"));
                }
                sorted.push((name, on));
                Ok(())
            } else {
                Err(meta.error("expected `collection = \"name\"`, `index(...)` or `sorted(...)`"))
            }
        })?;
    }
    let Some(collection) = collection else {
        return Err(syn::Error::new_spanned(&input.ident, "missing #[document(collection = \"name\")]"));
    };
    if !valid_name(&collection.value()) {
        return Err(syn::Error::new(
            collection.span(),
            "a collection name is lower-case letters, digits and `_`, starting with a letter",
        ));
    }
    let ident = &input.ident;
    let (impl_generics, type_generics, where_clause) = input.generics.split_for_impl();
    let indexes = indexes.iter().map(|(unique, field)| {
        if *unique {
            quote!(::mortar::store::Index::unique(#field))
        } else {
            quote!(::mortar::store::Index::lookup(#field))
        }
    });
    let sorted =
        sorted.iter().map(|(name, on)| quote!(::mortar::store::SortedIndex::new(#name, &[#(#on),*])));
    let register = if input.generics.params.is_empty() {
        quote! {
            ::mortar::inventory::submit! {
                ::mortar::store::DocumentDecl {
                    collection: ::mortar::store::Collection::of::<#ident>,
                    defined_at: module_path!(),
                }
            }
        }
    } else {
        quote!()
    };
    Ok(quote! {
        impl #impl_generics ::mortar::store::Document for #ident #type_generics #where_clause {
            const COLLECTION: &'static str = #collection;
            const INDEXES: &'static [::mortar::store::Index] = &[#(#indexes),*];
            const SORTED: &'static [::mortar::store::SortedIndex] = &[#(#sorted),*];
        }
        #register
    })
}

/// Whether `name` is lower-case letters, digits and `_`, starting with a letter: a collection's
/// or a sorted index's.
fn valid_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The string of `#[serde(KEY = "…")]` among `attrs` (`rename`, `rename_all`), also in its
/// `KEY(serialize = "…")` form; other serde attributes are left to serde.
fn serde_rename(attrs: &[syn::Attribute], key: &str) -> syn::Result<Option<String>> {
    let mut found = None;
    for attr in attrs.iter().filter(|attr| attr.path().is_ident("serde")) {
        attr.parse_nested_meta(|meta| {
            if !meta.path.is_ident(key) {
                // Skip whatever this is: `default`, `skip`, `with = "…"`, `bound(…)`, ….
                if meta.input.peek(syn::Token![=]) {
                    let _: syn::Expr = meta.value()?.parse()?;
                } else if meta.input.peek(syn::token::Paren) {
                    let _ = meta.parse_nested_meta(|inner| {
                        if inner.input.peek(syn::Token![=]) {
                            let _: syn::Expr = inner.value()?.parse()?;
                        }
                        Ok(())
                    });
                }
                return Ok(());
            }
            if meta.input.peek(syn::Token![=]) {
                let name: LitStr = meta.value()?.parse()?;
                found = Some(name.value());
            } else {
                meta.parse_nested_meta(|inner| {
                    let name: LitStr = inner.value()?.parse()?;
                    if inner.path.is_ident("serialize") {
                        found = Some(name.value());
                    }
                    Ok(())
                })?;
            }
            Ok(())
        })?;
    }
    Ok(found)
}

/// A snake_case field name under serde's `rename_all` rule `rule`; `None` for an unknown rule.
fn apply_rename_all(rule: &str, field: &str) -> Option<String> {
    let pascal = || -> String {
        field
            .split('_')
            .map(|word| {
                let mut chars = word.chars();
                chars
                    .next()
                    .map_or_else(String::new, |first| first.to_ascii_uppercase().to_string() + chars.as_str())
            })
            .collect()
    };
    Some(match rule {
        "lowercase" | "snake_case" => field.to_owned(),
        "UPPERCASE" | "SCREAMING_SNAKE_CASE" => field.to_ascii_uppercase(),
        "PascalCase" => pascal(),
        "camelCase" => {
            let pascal = pascal();
            let mut chars = pascal.chars();
            chars
                .next()
                .map_or_else(String::new, |first| first.to_ascii_lowercase().to_string() + chars.as_str())
        }
        "kebab-case" => field.replace('_', "-"),
        "SCREAMING-KEBAB-CASE" => field.replace('_', "-").to_ascii_uppercase(),
        _ => return None,
    })
}
