//! A1111's prompt attention syntax, exactly as `modules/prompt_parser.py`
//! `parse_prompt_attention` reads it:
//!
//! * `(text)` multiplies the attention of `text` by 1.1, `[text]` divides it by 1.1; nesting
//!   multiplies (`((text))` = 1.21);
//! * `(text:1.3)` multiplies by the given number (spaces allowed around it);
//! * `\(`, `\)`, `\[`, `\]`, `\\` are literal characters; a lone `\` is dropped;
//! * unbalanced brackets: a `)` or `]` without opener is literal text; openers never closed
//!   apply their 1.1 multiplier to the rest of the prompt;
//! * `BREAK` (a whole word, surrounding whitespace removed) ends the current 75-token chunk;
//! * runs with the same weight are merged.
//!
//! A1111 scans the prompt with one regex; this module scans it by hand with the same
//! alternatives in the same order, so the weights come out bit-identical (same f64 products
//! in the same order). Prompt *editing* (`[from:to:when]`, `[a|b]`) is a separate A1111 pass
//! that is not supported; its brackets are read as attention syntax like A1111 would read
//! them with that pass switched off.

use super::PromptError;

/// One run of prompt text with its attention multiplier. A1111 encodes `BREAK` as the
/// pair (`"BREAK"`, -1): see [`WeightedText::is_break`].
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedText {
    pub text: String,
    pub weight: f64,
}

impl WeightedText {
    fn new(text: impl Into<String>, weight: f64) -> Self {
        Self {
            text: text.into(),
            weight,
        }
    }

    /// A1111's test in `tokenize_line`: `text == 'BREAK' and weight == -1`.
    pub fn is_break(&self) -> bool {
        self.text == "BREAK" && self.weight == -1.0
    }
}

/// One match of A1111's `re_attention`.
#[derive(Debug, Clone, PartialEq)]
enum Token<'a> {
    /// `\(`, `\)`, `\[`, `\]`, `\\` → the character; a lone `\` → "".
    Escaped(&'a str),
    OpenRound,
    OpenSquare,
    /// `:\s*([+-]?[.\d]+)\s*\)`: the number's text, and the whole match.
    Weight {
        number: &'a str,
        all: &'a str,
    },
    CloseRound,
    CloseSquare,
    /// `[^\\()\[\]:]+` or a lone `:`.
    Text(&'a str),
}

/// Python's `\s` on `str` (Unicode whitespace; includes \x1c-\x1f, which Rust's
/// `char::is_whitespace` does not).
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `\w` on `str` (for `\b`).
fn is_py_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Byte length of the longest prefix of `s` whose chars satisfy `pred`.
fn prefix_len(s: &str, pred: impl Fn(char) -> bool) -> usize {
    s.char_indices()
        .find(|&(_, c)| !pred(c))
        .map(|(i, _)| i)
        .unwrap_or(s.len())
}

/// Tries `:\s*([+-]?[.\d]+)\s*\)` at the start of `s` (which starts with ':').
fn weight_token(s: &str) -> Option<Token<'_>> {
    let mut pos = 1;
    pos += prefix_len(&s[pos..], is_py_space);
    let number_start = pos;
    if s[pos..].starts_with(['+', '-']) {
        pos += 1;
    }
    let digits = prefix_len(&s[pos..], |c| c == '.' || c.is_ascii_digit());
    if digits == 0 {
        return None;
    }
    pos += digits;
    let number_end = pos;
    pos += prefix_len(&s[pos..], is_py_space);
    if !s[pos..].starts_with(')') {
        return None;
    }
    pos += 1;
    Some(Token::Weight {
        number: &s[number_start..number_end],
        all: &s[..pos],
    })
}

/// The matches of `re_attention` over `text`, in order (every character belongs to one).
fn scan(text: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let (token, len) = match c {
            '\\' => match rest[1..].chars().next() {
                Some(n @ ('(' | ')' | '[' | ']' | '\\')) => {
                    (Token::Escaped(&rest[1..2]), 1 + n.len_utf8())
                }
                _ => (Token::Escaped(""), 1),
            },
            '(' => (Token::OpenRound, 1),
            '[' => (Token::OpenSquare, 1),
            ':' => match weight_token(rest) {
                Some(t @ Token::Weight { all, .. }) => {
                    let len = all.len();
                    (t, len)
                }
                _ => (Token::Text(&rest[..1]), 1),
            },
            ')' => (Token::CloseRound, 1),
            ']' => (Token::CloseSquare, 1),
            _ => {
                let len = prefix_len(rest, |c| !matches!(c, '\\' | '(' | ')' | '[' | ']' | ':'));
                (Token::Text(&rest[..len]), len)
            }
        };
        tokens.push(token);
        rest = &rest[len..];
    }
    tokens
}

/// `re.split(r"\s*\bBREAK\b\s*", text)`.
pub fn split_break(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut part_start = 0;
    let mut search = 0;
    while let Some(found) = text[search..].find("BREAK") {
        let at = search + found;
        let end = at + "BREAK".len();
        let before_ok = text[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !is_py_word(c));
        let after_ok = text[end..].chars().next().is_none_or(|c| !is_py_word(c));
        if !(before_ok && after_ok) {
            search = at + 1;
            continue;
        }
        // The match starts at the whitespace run before BREAK (not before the last split).
        let lead = text[part_start..at]
            .char_indices()
            .rev()
            .take_while(|&(_, c)| is_py_space(c))
            .last()
            .map(|(i, _)| part_start + i)
            .unwrap_or(at);
        let trail = end + prefix_len(&text[end..], is_py_space);
        parts.push(&text[part_start..lead]);
        part_start = trail;
        search = trail;
    }
    parts.push(&text[part_start..]);
    parts
}

/// `parse_prompt_attention(text)`. Fails only where A1111 raises: a weight that Python's
/// `float()` rejects (e.g. `(a:1.2.3)`).
pub fn parse_prompt_attention(text: &str) -> Result<Vec<WeightedText>, PromptError> {
    const ROUND: f64 = 1.1;
    let square = 1.0 / 1.1;
    let mut res: Vec<WeightedText> = Vec::new();
    let mut round_brackets: Vec<usize> = Vec::new();
    let mut square_brackets: Vec<usize> = Vec::new();
    fn multiply_range(res: &mut [WeightedText], start: usize, multiplier: f64) {
        for item in &mut res[start..] {
            item.weight *= multiplier;
        }
    }
    let push_text = |res: &mut Vec<WeightedText>, text: &str| {
        for (i, part) in split_break(text).into_iter().enumerate() {
            if i > 0 {
                res.push(WeightedText::new("BREAK", -1.0));
            }
            res.push(WeightedText::new(part, 1.0));
        }
    };
    for token in scan(text) {
        match token {
            Token::Escaped(c) => res.push(WeightedText::new(c, 1.0)),
            Token::OpenRound => round_brackets.push(res.len()),
            Token::OpenSquare => square_brackets.push(res.len()),
            Token::Weight { number, all } => match round_brackets.pop() {
                Some(start) => {
                    let weight: f64 = number.parse().map_err(|_| PromptError::BadWeight {
                        prompt: text.to_string(),
                        weight: number.to_string(),
                    })?;
                    multiply_range(&mut res, start, weight);
                }
                None => push_text(&mut res, all),
            },
            Token::CloseRound => match round_brackets.pop() {
                Some(start) => multiply_range(&mut res, start, ROUND),
                None => push_text(&mut res, ")"),
            },
            Token::CloseSquare => match square_brackets.pop() {
                Some(start) => multiply_range(&mut res, start, square),
                None => push_text(&mut res, "]"),
            },
            Token::Text(t) => push_text(&mut res, t),
        }
    }
    for pos in round_brackets {
        multiply_range(&mut res, pos, ROUND);
    }
    for pos in square_brackets {
        multiply_range(&mut res, pos, square);
    }
    if res.is_empty() {
        res.push(WeightedText::new("", 1.0));
    }
    // Merge runs of identical weights.
    let mut i = 0;
    while i + 1 < res.len() {
        if res[i].weight == res[i + 1].weight {
            let next = res.remove(i + 1);
            res[i].text.push_str(&next.text);
        } else {
            i += 1;
        }
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Vec<(String, f64)> {
        parse_prompt_attention(text)
            .unwrap()
            .into_iter()
            .map(|w| (w.text, w.weight))
            .collect()
    }

    fn pairs(expected: &[(&str, f64)]) -> Vec<(String, f64)> {
        expected.iter().map(|(t, w)| (t.to_string(), *w)).collect()
    }

    /// The examples of `parse_prompt_attention`'s docstring in A1111's
    /// modules/prompt_parser.py, with the exact floats Python prints.
    #[test]
    fn a1111_docstring_examples() {
        assert_eq!(parsed("normal text"), pairs(&[("normal text", 1.0)]));
        assert_eq!(
            parsed("an (important) word"),
            pairs(&[("an ", 1.0), ("important", 1.1), (" word", 1.0)])
        );
        assert_eq!(parsed("(unbalanced"), pairs(&[("unbalanced", 1.1)]));
        assert_eq!(parsed(r"\(literal\]"), pairs(&[("(literal]", 1.0)]));
        assert_eq!(
            parsed("(unnecessary)(parens)"),
            pairs(&[("unnecessaryparens", 1.1)])
        );
        assert_eq!(
            parsed("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))."),
            pairs(&[
                ("a ", 1.0),
                ("house", 1.5730000000000004),
                (" ", 1.1),
                ("on", 1.0),
                (" a ", 1.1),
                ("hill", 0.55),
                (", sun, ", 1.1),
                ("sky", 1.4641000000000006),
                (".", 1.1),
            ])
        );
    }

    /// Expected values from Python's `re.split(r"\s*\bBREAK\b\s*", text)`.
    #[test]
    fn break_split_matches_re_split() {
        assert_eq!(split_break("a  BREAK\tb"), vec!["a", "b"]);
        assert_eq!(split_break("BREAK"), vec!["", ""]);
        assert_eq!(split_break("a BREAK BREAK b"), vec!["a", "", "b"]);
        assert_eq!(split_break("xBREAK y_BREAK"), vec!["xBREAK y_BREAK"]);
        assert_eq!(split_break("a,BREAK,b"), vec!["a,", ",b"]);
    }
}
