//! Shell-style name patterns for `ksyms find`: `*`, `?` and `[...]` classes
//! (`[!...]` or `[^...]` negated, `a-z` ranges), as fnmatch(3) without flags.
//! A pattern without any of them matches the one name equal to it.

/// One piece of a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Byte(u8),
    Any,
    Star,
    Class {
        negated: bool,
        ranges: Vec<(u8, u8)>,
    },
}

/// A compiled pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    tokens: Vec<Token>,
}

impl Glob {
    pub fn new(pattern: &str) -> Glob {
        let p = pattern.as_bytes();
        let mut tokens = Vec::new();
        let mut i = 0;
        while let Some(&c) = p.get(i) {
            match c {
                b'*' => {
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                    i += 1;
                }
                b'?' => {
                    tokens.push(Token::Any);
                    i += 1;
                }
                b'[' => match parse_class(p, i + 1) {
                    Some((token, next)) => {
                        tokens.push(token);
                        i = next;
                    }
                    // An unclosed '[' is an ordinary character, as in fnmatch(3).
                    None => {
                        tokens.push(Token::Byte(b'['));
                        i += 1;
                    }
                },
                b'\\' if i + 1 < p.len() => {
                    tokens.push(Token::Byte(p[i + 1]));
                    i += 2;
                }
                _ => {
                    tokens.push(Token::Byte(c));
                    i += 1;
                }
            }
        }
        Glob { tokens }
    }

    /// Whether the pattern uses any wildcard (otherwise it names one symbol).
    pub fn is_literal(&self) -> bool {
        self.tokens.iter().all(|t| matches!(t, Token::Byte(_)))
    }

    /// Whether `name` matches the whole pattern.
    pub fn matches(&self, name: &[u8]) -> bool {
        // Iterative matcher with one backtrack point (the last '*'): linear in
        // practice, no recursion.
        let (mut t, mut n) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        loop {
            match self.tokens.get(t) {
                Some(Token::Star) => {
                    star = Some((t, n));
                    t += 1;
                    continue;
                }
                Some(token) => {
                    if let Some(&c) = name.get(n) {
                        if token_matches(token, c) {
                            t += 1;
                            n += 1;
                            continue;
                        }
                    }
                }
                None => {
                    if n == name.len() {
                        return true;
                    }
                }
            }
            // Mismatch: let the last '*' swallow one more byte, if it can.
            match star {
                Some((st, sn)) if sn < name.len() => {
                    star = Some((st, sn + 1));
                    t = st + 1;
                    n = sn + 1;
                }
                _ => return false,
            }
        }
    }
}

fn token_matches(token: &Token, c: u8) -> bool {
    match token {
        Token::Byte(b) => *b == c,
        Token::Any => true,
        Token::Star => true,
        Token::Class { negated, ranges } => {
            ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
        }
    }
}

/// Parses a class whose '[' was just before `start`; returns the token and the
/// index after its ']'.
fn parse_class(p: &[u8], start: usize) -> Option<(Token, usize)> {
    let mut i = start;
    let negated = matches!(p.get(i), Some(b'!') | Some(b'^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let c = *p.get(i)?;
        if c == b']' && !first {
            return Some((Token::Class { negated, ranges }, i + 1));
        }
        first = false;
        if p.get(i + 1) == Some(&b'-') && p.get(i + 2).is_some_and(|&e| e != b']') {
            let hi = p[i + 2];
            ranges.push((c.min(hi), c.max(hi)));
            i += 3;
        } else {
            ranges.push((c, c));
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    fn m(p: &str, n: &str) -> bool {
        Glob::new(p).matches(n.as_bytes())
    }

    #[test]
    fn literals_match_only_themselves() {
        assert!(m("kern_kldload", "kern_kldload"));
        assert!(!m("kern_kldload", "kern_kldload2"));
        assert!(!m("kern_kldload", "kern_kldloa"));
        assert!(Glob::new("abc").is_literal());
        assert!(!Glob::new("a*c").is_literal());
    }

    #[test]
    fn stars_and_questions() {
        assert!(m("kern_*", "kern_kldload"));
        assert!(m("*load", "kern_kldload"));
        assert!(m("*kld*", "kern_kldload"));
        assert!(!m("*kld*", "kern_exec"));
        assert!(m("k?rn_*", "kern_x"));
        assert!(!m("k?rn_*", "krn_x"));
        assert!(m("*", ""));
        assert!(!m("?", ""));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
    }

    #[test]
    fn classes() {
        assert!(m("x[0-9]", "x7"));
        assert!(!m("x[0-9]", "xa"));
        assert!(m("x[!0-9]", "xa"));
        assert!(!m("x[^0-9]", "x1"));
        assert!(m("[]]", "]"));
        assert!(m("x[", "x["));
        assert!(m("a\\*", "a*"));
        assert!(!m("a\\*", "ab"));
    }
}
