//! Proc-macros re-exported by the mortar SDK (`mortar::handler`). Module authors never name this
//! crate; the code it generates names only `::mortar` paths.

use proc_macro::TokenStream;
use quote::quote;
use syn::{
    Ident, ItemFn, LitStr, Token,
    parse::{Parse, ParseStream},
    parse_macro_input,
};

/// `#[handler("main.sub")]` or `#[handler("main.sub", internal)]` on an
/// `async fn(Ctx, Req) -> Result<Resp, Code>`.
struct HandlerArgs {
    route: LitStr,
    internal: bool,
}

impl Parse for HandlerArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let route: LitStr = input.parse()?;
        let mut internal = false;
        if input.peek(Token![,]) {
            input.parse::<Token![,]>()?;
            let flag: Ident = input.parse()?;
            if flag != "internal" {
                return Err(syn::Error::new(flag.span(), "expected `internal` or nothing"));
            }
            internal = true;
        }
        if !input.is_empty() {
            return Err(input.error("unexpected tokens after the route"));
        }
        Ok(Self { route, internal })
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

/// Registers an `async fn(Ctx, Req) -> Result<Resp, Code>` as the handler of a route.
///
/// `#[handler("pack.query")]` makes a client route; `#[handler("pack.add_items", internal)]` a
/// route only other modules can call. The function stays as written; the macro adds the glue that
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
    let name = &function.sig.ident;
    let route = &args.route;
    let access = if args.internal {
        quote!(::mortar::route::Access::Internal)
    } else {
        quote!(::mortar::route::Access::Client)
    };
    quote! {
        #function

        const _: () = {
            fn shim(
                ctx: ::mortar::Ctx,
                body: ::mortar::bytes::Bytes,
            ) -> ::mortar::route::HandlerFuture {
                ::mortar::route::dispatch(ctx, body, #name)
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
                }
            }
        };
    }
    .into()
}
