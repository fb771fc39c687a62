//! `include PATTERN`, as keepalived's `lib/parser.c` does it: the pattern is a shell glob
//! (`*`, `?`, `[...]`), a relative pattern is resolved against the directory of the file that
//! holds the `include` (keepalived `chdir`s there while reading it), matches are read in sorted
//! order, a pattern matching nothing is a warning, and includes nest. `include` may appear
//! wherever a statement may, including inside blocks: it works on the token stream, so the
//! tokens of an included file are spliced in place of the `include` line and every token keeps
//! the file it came from (diagnostics name the included file).
//!
//! Everything is bounded (nesting, files, bytes, directory entries looked at), since `parse_str`
//! is fuzzed and a pattern such as `/*/*/*` must not walk the whole disk.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use super::lexer::{Lexer, Token, TokenKind};
use super::model::{Diagnostic, Location};

/// Nesting of includes (the top-level file is depth 0).
pub const MAX_INCLUDE_DEPTH: usize = 16;
/// Files read through `include`, in all.
pub const MAX_INCLUDED_FILES: usize = 512;
/// Size of one included file.
pub const MAX_FILE_BYTES: u64 = 16 << 20;
/// Directory entries looked at while matching globs, in all.
const MAX_DIR_ENTRIES: usize = 100_000;

/// The top-level text expanded: its tokens, and those of the files it includes, go to `out`
/// in order, as they are read; returns the errors and the warnings.
pub fn expand(text: &str, file: &Arc<Path>, out: &mut dyn FnMut(Token)) -> (Vec<Diagnostic>, Vec<Diagnostic>) {
    let mut ex = Expander { errors: Vec::new(), warnings: Vec::new(), files: 0, dir_entries: 0 };
    let mut chain = vec![Frame { path: identity(file), included_at: None }];
    ex.splice(text, file, &mut chain, out);
    (ex.errors, ex.warnings)
}

/// A file being read, and the `include` that brought it in.
struct Frame {
    path: PathBuf,
    included_at: Option<Location>,
}

struct Expander {
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    files: usize,
    dir_entries: usize,
}

/// The path used to recognise a file already being read.
fn identity(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

fn location(token: &Token) -> Location {
    Location { file: Arc::clone(&token.file), line: token.line, column: token.column }
}

impl Expander {
    fn diag(list: &mut Vec<Diagnostic>, token: &Token, message: String) {
        list.push(Diagnostic { location: location(token), message });
    }

    fn splice(&mut self, text: &str, file: &Arc<Path>, chain: &mut Vec<Frame>, out: &mut dyn FnMut(Token)) {
        let mut lexer = Lexer::new(text, file);
        let mut tokens = lexer.by_ref().peekable();
        let mut at_start = true;
        while let Some(token) = tokens.next() {
            let is_include = matches!(&token.kind, TokenKind::Word(w) if w == "include");
            if !(at_start && is_include) {
                at_start = matches!(token.kind, TokenKind::Newline | TokenKind::Open | TokenKind::Close);
                out(token);
                continue;
            }
            let mut args = Vec::new();
            while let Some(t) = tokens.next_if(|t| matches!(t.kind, TokenKind::Word(_))) {
                if let TokenKind::Word(w) = &t.kind {
                    args.push((w.clone(), t.clone()));
                }
            }
            match args.as_slice() {
                [] => Self::diag(
                    &mut self.errors,
                    &token,
                    "missing argument for `include`: expected `include PATTERN`".to_string(),
                ),
                [(pattern, at), rest @ ..] => {
                    if let Some((extra, at)) = rest.first() {
                        Self::diag(&mut self.warnings, at, format!("unexpected extra argument `{extra}`; ignored"));
                    }
                    self.include(pattern, at, &token, chain, out);
                }
            }
            // The included text ends the statement the `include` line was.
            out(Token { kind: TokenKind::Newline, ..token });
            at_start = true;
        }
        self.errors.append(&mut lexer.errors);
    }

    /// Reads every file `pattern` matches, relative to the directory of `kw`'s file.
    fn include(&mut self, pattern: &str, at: &Token, kw: &Token, chain: &mut Vec<Frame>, out: &mut dyn FnMut(Token)) {
        if chain.len() > MAX_INCLUDE_DEPTH {
            let message = format!("includes nested too deeply (limit {MAX_INCLUDE_DEPTH})");
            return Self::diag(&mut self.errors, kw, message);
        }
        let base = kw.file.parent().unwrap_or_else(|| Path::new(""));
        let full = base.join(pattern);
        let matches = self.glob(&full);
        if matches.is_empty() {
            let message = format!("include `{pattern}`: no file matches `{}`; nothing included", full.display());
            return Self::diag(&mut self.warnings, at, message);
        }
        for path in matches {
            let id = identity(&path);
            if let Some(pos) = chain.iter().position(|f| f.path == id) {
                let first = match chain.get(pos).and_then(|f| f.included_at.as_ref()) {
                    Some(loc) => format!("it is already being read, included at {loc}"),
                    None => "it is the top-level configuration file".to_string(),
                };
                let message =
                    format!("include loop: `{}` includes `{}` again; {first}", kw.file.display(), path.display());
                Self::diag(&mut self.errors, at, message);
                continue;
            }
            if self.files >= MAX_INCLUDED_FILES {
                let message = format!("too many included files (limit {MAX_INCLUDED_FILES})");
                return Self::diag(&mut self.errors, at, message);
            }
            self.files += 1;
            let text = match std::fs::metadata(&path) {
                Ok(m) if m.len() > MAX_FILE_BYTES => {
                    let message = format!("cannot include `{}`: larger than {MAX_FILE_BYTES} bytes", path.display());
                    Self::diag(&mut self.errors, at, message);
                    continue;
                }
                // keepalived's glob skips directories; so do we, and anything not a regular file.
                Ok(m) if !m.is_file() => continue,
                Ok(_) => std::fs::read(&path),
                Err(e) => Err(e),
            };
            match text {
                Ok(bytes) => {
                    let file: Arc<Path> = Arc::from(path.as_path());
                    chain.push(Frame { path: id, included_at: Some(location(at)) });
                    self.splice(&String::from_utf8_lossy(&bytes), &file, chain, out);
                    chain.pop();
                }
                Err(e) => {
                    let message = format!("cannot read included file `{}`: {e}", path.display());
                    Self::diag(&mut self.errors, at, message);
                }
            }
        }
    }

    /// Expands a glob pattern component by component, sorted like glob(3).
    fn glob(&mut self, pattern: &Path) -> Vec<PathBuf> {
        let mut found = vec![PathBuf::new()];
        for component in pattern.components() {
            let name = match component {
                Component::Normal(name) => name.to_string_lossy(),
                other => {
                    found.iter_mut().for_each(|p| p.push(other.as_os_str()));
                    continue;
                }
            };
            if !has_magic(&name) {
                let literal = unescape(&name);
                found.iter_mut().for_each(|p| p.push(&literal));
                continue;
            }
            let mut next = Vec::new();
            for dir in &found {
                let listing = if dir.as_os_str().is_empty() { Path::new(".") } else { dir.as_path() };
                let Ok(entries) = std::fs::read_dir(listing) else {
                    continue;
                };
                for entry in entries.flatten() {
                    self.dir_entries += 1;
                    if self.dir_entries > MAX_DIR_ENTRIES {
                        return Vec::new();
                    }
                    let entry_name = entry.file_name().to_string_lossy().into_owned();
                    // As in the shell, a leading dot must be matched explicitly.
                    if entry_name.starts_with('.') && !name.starts_with('.') {
                        continue;
                    }
                    if glob_match(&name, &entry_name) {
                        next.push(dir.join(&entry_name));
                    }
                }
            }
            found = next;
            if found.is_empty() {
                break;
            }
        }
        found.retain(|p| !p.as_os_str().is_empty() && p.exists());
        found.sort();
        found.dedup();
        found
    }
}

fn has_magic(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' { chars.next().unwrap_or('\\') } else { c });
    }
    out
}

/// fnmatch(3) without flags: `*`, `?`, `[abc]`, `[a-z]`, `[!a]`/`[^a]`, `\x`. Iterative with
/// single-star backtracking, so O(len(pattern) * len(name)).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        let step = match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
                continue;
            }
            Some('?') => Some(pi + 1),
            Some('[') => match class(&p, pi, n[ni]) {
                Some((true, end)) => Some(end),
                Some((false, _)) => None,
                // An unterminated `[` is a literal.
                None => (n[ni] == '[').then_some(pi + 1),
            },
            Some('\\') if pi + 1 < p.len() => (p[pi + 1] == n[ni]).then_some(pi + 2),
            Some(&c) => (c == n[ni]).then_some(pi + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                pi = next;
                ni += 1;
            }
            (None, Some((sp, sn))) => {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            (None, None) => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Matches `c` against the bracket expression starting at `p[start] == '['`: (matched, index
/// after `]`), or None when the bracket is not closed.
fn class(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(p.get(i), Some('!' | '^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = *p.get(i)?;
        if lo == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|&hi| hi != ']') {
            let hi = p[i + 2];
            matched |= lo <= c && c <= hi;
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matching() {
        for (p, n, m) in [
            ("*.conf", "a.conf", true),
            ("*.conf", "a.conf.bak", false),
            ("*", "", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("[ab]*", "bx", true),
            ("[!ab]*", "bx", false),
            ("[^ab]*", "cx", true),
            ("[a-c]1", "b1", true),
            ("[a-c]1", "d1", false),
            ("[]]", "]", true),
            ("[", "[", true),
            ("\\*", "*", true),
            ("\\*", "a", false),
            ("*a*b*c", "xaybzc", true),
            ("*a*b*c", "xaybzcd", false),
            ("vs-*-[0-9].conf", "vs-web-7.conf", true),
            ("é?", "éé", true),
        ] {
            assert_eq!(glob_match(p, n), m, "{p} vs {n}");
        }
    }
}
