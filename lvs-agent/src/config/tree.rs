//! Generic statement tree: a statement is the words of one line, optionally
//! followed by a `{ ... }` block. No keyword knowledge lives here.

use std::path::Path;
use std::sync::Arc;

use super::lexer::{Token, TokenKind};
use super::model::{Diagnostic, Location};

/// Deeper nesting is rejected; keeps drop/compare recursion bounded.
pub const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq)]
pub struct Word {
    pub text: String,
    pub file: Arc<Path>,
    pub line: u32,
    pub column: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Keyword then arguments. Empty only for a keyword-less `{` (an error).
    pub words: Vec<Word>,
    /// `Some` when the statement has a block, even an empty one.
    pub children: Option<Vec<Node>>,
    pub file: Arc<Path>,
    pub line: u32,
    pub column: u32,
}

/// A node whose block is still open, and the position of its `{`.
struct Open {
    node: Node,
    brace: (Arc<Path>, u32, u32),
}

/// Builds the tree of a whole token list (the parser streams tokens into [`Builder`]).
pub fn build(tokens: &[Token]) -> (Vec<Node>, Vec<Diagnostic>) {
    let mut builder = Builder::default();
    for t in tokens {
        builder.push(t.clone());
    }
    builder.finish()
}

/// Builds the statement tree from tokens pushed one at a time, so that no token list is ever
/// held whole (a config of 10,000 services is a million tokens). Never fails outright:
/// stray braces and unclosed blocks are reported and the rest is still built.
#[derive(Default)]
pub struct Builder {
    errors: Vec<Diagnostic>,
    root: Vec<Node>,
    stack: Vec<Open>,
    pending: Vec<Word>,
    /// A `{` on its own line opens the block of the statement just before it.
    can_attach: bool,
    /// Inside blocks nested past [`MAX_DEPTH`]: skipped.
    skip_depth: usize,
}

impl Builder {
    pub fn push(&mut self, token: Token) {
        let Self { errors, root, stack, pending, can_attach, skip_depth } = self;
        let mut error = |file: &Arc<Path>, line, column, message: String| {
            let file = Arc::clone(file);
            errors.push(Diagnostic { location: Location { file, line, column }, message });
        };
        if *skip_depth > 0 {
            match token.kind {
                TokenKind::Open => *skip_depth += 1,
                TokenKind::Close => *skip_depth -= 1,
                _ => {}
            }
            return;
        }
        let level = match stack.last_mut() {
            Some(open) => open.node.children.get_or_insert_with(Vec::new),
            None => &mut *root,
        };
        match token.kind {
            TokenKind::Word(text) => {
                pending.push(Word { text, file: token.file, line: token.line, column: token.column });
            }
            TokenKind::Newline => {
                if !pending.is_empty() {
                    level.push(leaf(std::mem::take(pending)));
                    *can_attach = true;
                }
            }
            TokenKind::Open => {
                let node = if !pending.is_empty() {
                    Some(leaf(std::mem::take(pending)))
                } else if *can_attach && level.last().is_some_and(|n| n.children.is_none()) {
                    level.pop()
                } else {
                    None
                };
                let mut node = node.unwrap_or_else(|| {
                    let message = "`{` without a keyword before it".to_string();
                    error(&token.file, token.line, token.column, message);
                    let file = Arc::clone(&token.file);
                    Node { words: Vec::new(), children: None, file, line: token.line, column: token.column }
                });
                *can_attach = false;
                if stack.len() >= MAX_DEPTH {
                    let message = format!("blocks nested too deeply (limit {MAX_DEPTH})");
                    error(&token.file, token.line, token.column, message);
                    *skip_depth = 1;
                    return;
                }
                node.children = Some(Vec::new());
                stack.push(Open { node, brace: (token.file, token.line, token.column) });
            }
            TokenKind::Close => {
                if !pending.is_empty() {
                    level.push(leaf(std::mem::take(pending)));
                }
                *can_attach = false;
                match stack.pop() {
                    Some(open) => parent(stack, root).push(open.node),
                    None => {
                        let message = "unexpected `}`: no block is open".to_string();
                        error(&token.file, token.line, token.column, message);
                    }
                }
            }
        }
    }

    /// The tree, with blocks still open at the end closed and reported.
    pub fn finish(mut self) -> (Vec<Node>, Vec<Diagnostic>) {
        if !self.pending.is_empty() {
            let words = std::mem::take(&mut self.pending);
            parent(&mut self.stack, &mut self.root).push(leaf(words));
        }
        while let Some(open) = self.stack.pop() {
            let (file, line, column) = open.brace;
            let what = open.node.words.first().map_or(String::new(), |w| format!(" of `{}`", w.text));
            let message = format!("unclosed block: `{{`{what} opened on line {line} has no matching `}}`");
            self.errors.push(Diagnostic { location: Location { file, line, column }, message });
            parent(&mut self.stack, &mut self.root).push(open.node);
        }
        (self.root, self.errors)
    }
}

fn leaf(words: Vec<Word>) -> Node {
    let (file, line, column) = match words.first() {
        Some(w) => (Arc::clone(&w.file), w.line, w.column),
        None => (Arc::from(Path::new("")), 0, 0),
    };
    Node { words, children: None, file, line, column }
}

fn parent<'a>(stack: &'a mut [Open], root: &'a mut Vec<Node>) -> &'a mut Vec<Node> {
    match stack.last_mut() {
        Some(open) => open.node.children.get_or_insert_with(Vec::new),
        None => root,
    }
}

#[cfg(test)]
mod tests {
    use super::super::lexer::lex;
    use super::*;

    fn parse(text: &str) -> (Vec<Node>, Vec<String>) {
        let file: Arc<Path> = Arc::from(Path::new("k.conf"));
        let (tokens, lex_errors) = lex(text, &file);
        assert!(lex_errors.is_empty());
        let (nodes, errors) = build(&tokens);
        (nodes, errors.iter().map(ToString::to_string).collect())
    }

    /// Compact rendering: `kw arg {child; child}`.
    fn show(nodes: &[Node]) -> String {
        let parts: Vec<String> = nodes
            .iter()
            .map(|n| {
                let words: Vec<&str> = n.words.iter().map(|w| w.text.as_str()).collect();
                match &n.children {
                    Some(c) => format!("{} {{{}}}", words.join(" "), show(c)),
                    None => words.join(" "),
                }
            })
            .collect();
        parts.join("; ")
    }

    #[test]
    fn brace_placements_give_the_same_tree() {
        let expected = "rs 1 {weight 2}";
        for text in
            ["rs 1 {\nweight 2\n}\n", "rs 1\n{\n weight 2\n}", "rs 1 { weight 2 }", "rs 1\n\n! c\n{ weight 2\n}"]
        {
            let (nodes, errors) = parse(text);
            assert!(errors.is_empty(), "{text}: {errors:?}");
            assert_eq!(show(&nodes), expected, "{text}");
        }
    }

    #[test]
    fn value_lines_and_empty_blocks() {
        let (nodes, errors) = parse("vip {\n10.0.0.1/24 dev eth0\n10.0.0.2\n}\ne {}\nf");
        assert!(errors.is_empty());
        assert_eq!(show(&nodes), "vip {10.0.0.1/24 dev eth0; 10.0.0.2}; e {}; f");
        assert_eq!((nodes[0].children.as_ref().map(|c| c[1].line)), Some(3));
    }

    #[test]
    fn block_does_not_attach_across_a_closed_block() {
        let (_, errors) = parse("a { }\n{ b }");
        assert_eq!(errors, ["k.conf:2:1: `{` without a keyword before it"]);
    }

    #[test]
    fn unbalanced_braces() {
        let (nodes, errors) = parse("a {\n b {\n c\n}\n");
        assert_eq!(errors, ["k.conf:1:3: unclosed block: `{` of `a` opened on line 1 has no matching `}`"]);
        assert_eq!(show(&nodes), "a {b {c}}");
        let (nodes, errors) = parse("a\n}\nb { }\n}");
        assert_eq!(
            errors,
            ["k.conf:2:1: unexpected `}`: no block is open", "k.conf:4:1: unexpected `}`: no block is open"]
        );
        assert_eq!(show(&nodes), "a; b {}");
    }

    #[test]
    fn nesting_is_capped() {
        let deep = "a {\n".repeat(MAX_DEPTH + 5) + &"}\n".repeat(MAX_DEPTH + 5) + "z\n";
        let (nodes, errors) = parse(&deep);
        assert_eq!(errors, [format!("k.conf:{}:3: blocks nested too deeply (limit 32)", MAX_DEPTH + 1)]);
        assert_eq!(nodes.len(), 2);
        let ok = "a {\n".repeat(MAX_DEPTH) + &"}\n".repeat(MAX_DEPTH);
        assert!(parse(&ok).1.is_empty());
    }
}
