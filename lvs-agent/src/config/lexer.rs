//! Tokenizer for keepalived.conf. keepalived is line-oriented, so newlines are
//! tokens: they end statements. Positions are 1-based, columns count chars.

use std::path::Path;
use std::sync::Arc;

use super::model::{Diagnostic, Location};

#[derive(Debug, Clone, PartialEq)]
pub enum TokenKind {
    /// A bare word or a double-quoted string (quotes removed).
    Word(String),
    Open,
    Close,
    Newline,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub kind: TokenKind,
    /// The file the token was read from (includes splice several files together).
    pub file: Arc<Path>,
    pub line: u32,
    pub column: u32,
}

/// Splits `text` into tokens. Never fails outright: an unterminated quote is
/// reported and the string runs to the end of its line, so later errors are
/// still found.
pub fn lex(text: &str, file: &Arc<Path>) -> (Vec<Token>, Vec<Diagnostic>) {
    let mut tokens = Vec::new();
    let mut errors = Vec::new();
    let mut chars = text.chars().peekable();
    let (mut line, mut column) = (1u32, 1u32);
    while let Some(c) = chars.next() {
        let (start_line, start_column) = (line, column);
        column = column.saturating_add(1);
        let kind = match c {
            '\n' => {
                line = line.saturating_add(1);
                column = 1;
                TokenKind::Newline
            }
            '{' => TokenKind::Open,
            '}' => TokenKind::Close,
            // Comments run to the end of the line; the newline stays a token.
            '!' | '#' => {
                while chars.next_if(|&n| n != '\n').is_some() {}
                continue;
            }
            '"' => {
                let mut text = String::new();
                loop {
                    match chars.next_if(|&n| n != '\n') {
                        Some('"') => break,
                        Some(n) => text.push(n),
                        None => {
                            errors.push(Diagnostic {
                                location: Location { file: Arc::clone(file), line: start_line, column: start_column },
                                message: "unterminated quoted string".to_string(),
                            });
                            break;
                        }
                    }
                    column = column.saturating_add(1);
                }
                column = column.saturating_add(1);
                TokenKind::Word(text)
            }
            c if c.is_whitespace() => continue,
            c => {
                let mut text = String::from(c);
                while let Some(n) = chars.next_if(|&n| !n.is_whitespace() && !matches!(n, '{' | '}' | '"' | '!' | '#'))
                {
                    text.push(n);
                    column = column.saturating_add(1);
                }
                TokenKind::Word(text)
            }
        };
        tokens.push(Token { kind, file: Arc::clone(file), line: start_line, column: start_column });
    }
    (tokens, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(text: &str) -> Vec<(String, u32, u32)> {
        let (tokens, errors) = lex(text, &Arc::from(Path::new("t.conf")));
        assert!(errors.is_empty(), "{errors:?}");
        tokens
            .into_iter()
            .map(|t| {
                let s = match t.kind {
                    TokenKind::Word(w) => w,
                    TokenKind::Open => "{".into(),
                    TokenKind::Close => "}".into(),
                    TokenKind::Newline => "\\n".into(),
                };
                (s, t.line, t.column)
            })
            .collect()
    }

    fn texts(text: &str) -> Vec<String> {
        toks(text).into_iter().map(|t| t.0).collect()
    }

    #[test]
    fn words_braces_and_positions() {
        assert_eq!(
            toks("a {\n\tb 1}"),
            vec![
                ("a".into(), 1, 1),
                ("{".into(), 1, 3),
                ("\\n".into(), 1, 4),
                ("b".into(), 2, 2),
                ("1".into(), 2, 4),
                ("}".into(), 2, 5),
            ]
        );
    }

    #[test]
    fn comments() {
        assert_eq!(texts("! whole line\na # trailing { }\nb!x"), ["\\n", "a", "\\n", "b"]);
    }

    #[test]
    fn quoted_strings() {
        assert_eq!(
            toks(r#"notify "/bin/x # not a comment {}" y"#),
            vec![("notify".into(), 1, 1), ("/bin/x # not a comment {}".into(), 1, 8), ("y".into(), 1, 36),]
        );
        assert_eq!(texts(r#"a "" b"#), ["a", "", "b"]);
    }

    #[test]
    fn unterminated_quote_is_reported_and_ends_at_newline() {
        let (tokens, errors) = lex("a \"bc\nd", &Arc::from(Path::new("t.conf")));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].to_string(), "t.conf:1:3: unterminated quoted string");
        assert_eq!(tokens.len(), 4);
        assert_eq!(tokens[3].kind, TokenKind::Word("d".into()));
    }

    #[test]
    fn crlf_and_unicode_columns() {
        assert_eq!(toks("é x\r\n"), vec![("é".into(), 1, 1), ("x".into(), 1, 3), ("\\n".into(), 1, 5)]);
    }
}
