//! What Google's `protoc` refuses in a `.proto` file and protox (which builds module crates)
//! accepts: checked at a module's build (`mortar::build`), so a file client authors cannot compile
//! never builds.

/// Where a `.proto` file has what Google's `protoc` refuses and protox accepts, as `LINE: reason`:
/// an rpc whose request or reply type is written bare and named like an rpc of the same service
/// (`rpc Hello(Hello) returns (…)`): inside the service, `protoc` resolves `Hello` to the rpc.
pub fn protoc_refuses(text: &str) -> Option<String> {
    let tokens = tokens(text);
    let package = tokens
        .iter()
        .position(|(word, _)| word == "package")
        .and_then(|at| tokens.get(at + 1))
        .map_or("PACKAGE", |(name, _)| name.as_str());
    let mut at = 0;
    while at < tokens.len() {
        if tokens[at].0 != "service" {
            at += 1;
            continue;
        }
        let service = tokens.get(at + 1).map_or("", |token| token.0.as_str());
        let mut depth = 0;
        let mut rpcs: Vec<(&str, Vec<&str>, usize)> = Vec::new();
        at += 2;
        while let Some((token, line)) = tokens.get(at) {
            match token.as_str() {
                "{" => depth += 1,
                "}" => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                "rpc" if depth == 1 => {
                    let name = tokens.get(at + 1).map_or("", |token| token.0.as_str());
                    // The types: the words inside the rpc's parentheses, `stream` aside.
                    let mut types = Vec::new();
                    let mut inside = false;
                    for (word, _) in tokens.iter().skip(at + 2) {
                        match word.as_str() {
                            "(" => inside = true,
                            ")" => inside = false,
                            ";" | "{" => break,
                            "stream" => {}
                            word if inside => types.push(word),
                            _ => {}
                        }
                    }
                    rpcs.push((name, types, *line));
                }
                _ => {}
            }
            at += 1;
        }
        for (name, types, line) in &rpcs {
            if let Some(bare) =
                types.iter().find(|ty| !ty.contains('.') && rpcs.iter().any(|(rpc, _, _)| rpc == *ty))
            {
                return Some(format!(
                    "{line}: rpc {name} names the type `{bare}`, which inside service {service} is its rpc `{bare}` to Google's protoc (it refuses the file; client authors run it): write the full name, `.{package}.{bare}`"
                ));
            }
        }
    }
    None
}

/// The words and punctuation of a `.proto` file with their line numbers, comments and strings left
/// out.
fn tokens(text: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let (mut line, mut word) = (1, String::new());
    let flush = |word: &mut String, out: &mut Vec<(String, usize)>, line: usize| {
        if !word.is_empty() {
            out.push((std::mem::take(word), line));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                flush(&mut word, &mut out, line);
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                flush(&mut word, &mut out, line);
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                    }
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            '"' | '\'' => {
                flush(&mut word, &mut out, line);
                for inner in chars.by_ref() {
                    if inner == c {
                        break;
                    }
                }
            }
            c if c.is_alphanumeric() || c == '_' || c == '.' => word.push(c),
            c => {
                flush(&mut word, &mut out, line);
                if c == '\n' {
                    line += 1;
                } else if !c.is_whitespace() {
                    out.push((c.to_string(), line));
                }
            }
        }
    }
    flush(&mut word, &mut out, line);
    out
}

#[cfg(test)]
mod tests {
    use super::protoc_refuses;

    #[test]
    fn a_type_named_like_an_rpc_of_its_service_is_refused_with_its_line() {
        let text = "syntax = \"proto3\";\npackage greet;\nmessage Hello {}\n// rpc Hello(Hello)\nservice Greet {\n  rpc Hello(Hello)\n    returns (Hello);\n}\n";
        let problem = protoc_refuses(text).unwrap();
        assert!(problem.starts_with("6: rpc Hello names the type `Hello`"), "{problem}");
        assert!(problem.ends_with("`.greet.Hello`"), "{problem}");
        let fixed = text
            .replace("rpc Hello(Hello)", "rpc Hello(.greet.Hello)")
            .replace("returns (Hello)", "returns (stream .greet.Hello)");
        assert_eq!(protoc_refuses(&fixed), None);
        assert_eq!(protoc_refuses("service S { rpc Say(SayReq) returns (SayResp); }"), None);
    }
}
