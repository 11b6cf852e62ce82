//! Tokens of the coLinux config language.
//!
//! A token is a run of non-space characters; `"` quotes spaces and may
//! appear anywhere in a token (`eth0=tuntap,"my tap",…`), and `#` outside
//! quotes comments out the rest of the line. Tokens keep their quotes:
//! keys unquote their values field by field, and pass-through kernel
//! parameters go to the guest as written, since Linux understands
//! `init="/bin/sh -x"` too. Backslashes are plain characters, because
//! Windows paths are full of them.

/// One token and the line (from 1) where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub text: String,
    pub line: usize,
}

/// A `"` left open at the end of a line; `partial` is the token so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnterminatedQuote {
    pub line: usize,
    pub partial: String,
}

/// Splits a config file into tokens, dropping comments.
pub(crate) fn tokenize(text: &str) -> Result<Vec<Token>, UnterminatedQuote> {
    let mut tokens = Vec::new();
    let mut current: Option<Token> = None;
    let mut line = 1;
    let mut in_quote = false;
    let mut in_comment = false;

    for ch in text.chars() {
        if in_comment {
            if ch == '\n' {
                in_comment = false;
                line += 1;
            }
            continue;
        }
        if in_quote {
            // A quote must close on its own line: one forgotten `"` would
            // otherwise swallow the rest of the file into one token.
            if ch == '\n' || ch == '\r' {
                return Err(UnterminatedQuote {
                    line,
                    partial: current.map(|t| t.text).unwrap_or_default(),
                });
            }
            if ch == '"' {
                in_quote = false;
            }
            if let Some(token) = current.as_mut() {
                token.text.push(ch);
            }
            continue;
        }
        match ch {
            '#' => {
                tokens.extend(current.take());
                in_comment = true;
            }
            c if c.is_whitespace() => {
                tokens.extend(current.take());
                if c == '\n' {
                    line += 1;
                }
            }
            c => {
                if c == '"' {
                    in_quote = true;
                }
                current
                    .get_or_insert_with(|| Token {
                        text: String::new(),
                        line,
                    })
                    .text
                    .push(c);
            }
        }
    }
    if in_quote {
        return Err(UnterminatedQuote {
            line,
            partial: current.map(|t| t.text).unwrap_or_default(),
        });
    }
    tokens.extend(current);
    Ok(tokens)
}

/// True when every `"` in `text` is closed.
pub(crate) fn quotes_balanced(text: &str) -> bool {
    text.chars().filter(|&c| c == '"').count() % 2 == 0
}

/// Removes the quotes from a value, shell-style: `"C:\my dir"\x` → `C:\my dir\x`.
pub(crate) fn unquote(text: &str) -> String {
    text.chars().filter(|&c| c != '"').collect()
}

/// Splits a value at the commas outside quotes and unquotes each field:
/// `tuntap,"my tap",` → `["tuntap", "my tap", ""]`. There is always at
/// least one field.
pub(crate) fn split_fields(text: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut in_quote = false;
    for ch in text.chars() {
        match ch {
            '"' => in_quote = !in_quote,
            ',' if !in_quote => fields.push(String::new()),
            c => {
                if let Some(field) = fields.last_mut() {
                    field.push(c);
                }
            }
        }
    }
    fields
}

/// Splits `name=value` at the first `=`; a token without one has no value.
pub(crate) fn split_key(token: &str) -> (&str, Option<&str>) {
    match token.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (token, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(text: &str) -> Vec<(String, usize)> {
        tokenize(text)
            .expect("tokenizes")
            .into_iter()
            .map(|t| (t.text, t.line))
            .collect()
    }

    #[test]
    fn whitespace_separates_tokens_and_lines_are_counted() {
        assert_eq!(
            texts("kernel=vmlinux  mem=64\n\n\tro\r\ninit=/bin/sh"),
            vec![
                ("kernel=vmlinux".into(), 1),
                ("mem=64".into(), 1),
                ("ro".into(), 3),
                ("init=/bin/sh".into(), 4),
            ]
        );
    }

    #[test]
    fn quotes_keep_spaces_and_stay_in_the_token() {
        assert_eq!(
            texts(r#"eth0=tuntap,"my tap",00:11:22:33:44:55 cobd0="C:\My Files\root.fs""#),
            vec![
                (r#"eth0=tuntap,"my tap",00:11:22:33:44:55"#.into(), 1),
                (r#"cobd0="C:\My Files\root.fs""#.into(), 1),
            ]
        );
    }

    #[test]
    fn comments_run_to_the_end_of_the_line_outside_quotes() {
        assert_eq!(
            texts("# a comment\nmem=64 # the memory\nro#tail\nexec0=x,\"a # b\""),
            vec![
                ("mem=64".into(), 2),
                ("ro".into(), 3),
                ("exec0=x,\"a # b\"".into(), 4),
            ]
        );
    }

    #[test]
    fn an_open_quote_is_an_error_at_its_line() {
        assert_eq!(
            tokenize("mem=64\neth0=tuntap,\"my tap\nro"),
            Err(UnterminatedQuote {
                line: 2,
                partial: "eth0=tuntap,\"my tap".into()
            })
        );
        assert_eq!(
            tokenize("x=\"open").map_err(|e| e.line),
            Err(1),
            "at the end of the file too"
        );
    }

    #[test]
    fn fields_split_outside_quotes() {
        assert_eq!(
            split_fields(r#"tuntap,"my, tap",,x"#),
            vec!["tuntap", "my, tap", "", "x"]
        );
        assert_eq!(split_fields("slirp"), vec!["slirp"]);
        assert_eq!(unquote(r#""C:\my dir"\x"#), r"C:\my dir\x");
        assert!(quotes_balanced(r#"a="b c""#));
        assert!(!quotes_balanced(r#"a="b c"#));
    }
}
