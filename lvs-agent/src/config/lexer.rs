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

/// Splits `text` into tokens (all at once; the parser streams them through [`Lexer`]).
pub fn lex(text: &str, file: &Arc<Path>) -> (Vec<Token>, Vec<Diagnostic>) {
    let mut lexer = Lexer::new(text, file);
    let tokens = lexer.by_ref().collect();
    (tokens, lexer.errors)
}

/// The tokens of one file, one at a time. Never fails outright: an unterminated quote is
/// reported in `errors` and the string runs to the end of its line, so later errors are
/// still found.
pub struct Lexer<'t> {
    chars: std::iter::Peekable<std::str::Chars<'t>>,
    file: Arc<Path>,
    line: u32,
    column: u32,
    pub errors: Vec<Diagnostic>,
}

impl<'t> Lexer<'t> {
    #[must_use]
    pub fn new(text: &'t str, file: &Arc<Path>) -> Self {
        Self { chars: text.chars().peekable(), file: Arc::clone(file), line: 1, column: 1, errors: Vec::new() }
    }
}

impl Iterator for Lexer<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        loop {
            let c = self.chars.next()?;
            let (start_line, start_column) = (self.line, self.column);
            self.column = self.column.saturating_add(1);
            let kind = match c {
                '\n' => {
                    self.line = self.line.saturating_add(1);
                    self.column = 1;
                    TokenKind::Newline
                }
                '{' => TokenKind::Open,
                '}' => TokenKind::Close,
                '!' | '#' => {
                    while self.chars.next_if(|&n| n != '\n').is_some() {}
                    continue;
                }
                '"' => {
                    let mut text = String::new();
                    loop {
                        match self.chars.next_if(|&n| n != '\n') {
                            Some('"') => break,
                            Some(n) => text.push(n),
                            None => {
                                let file = Arc::clone(&self.file);
                                self.errors.push(Diagnostic {
                                    location: Location { file, line: start_line, column: start_column },
                                    message: "unterminated quoted string".to_string(),
                                });
                                break;
                            }
                        }
                        self.column = self.column.saturating_add(1);
                    }
                    self.column = self.column.saturating_add(1);
                    TokenKind::Word(text)
                }
                c if c.is_whitespace() => continue,
                c => {
                    let mut text = String::from(c);
                    while let Some(n) =
                        self.chars.next_if(|&n| !n.is_whitespace() && !matches!(n, '{' | '}' | '"' | '!' | '#'))
                    {
                        text.push(n);
                        self.column = self.column.saturating_add(1);
                    }
                    TokenKind::Word(text)
                }
            };
            return Some(Token { kind, file: Arc::clone(&self.file), line: start_line, column: start_column });
        }
    }
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
