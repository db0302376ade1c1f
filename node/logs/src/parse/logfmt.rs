//! logfmt: `key=value key="quoted value" flag`, as Heroku and Go's logfmt write it.
//! A key without `=` is a flag (true); quoted values take `\"` and `\\` escapes.

use rmpv::Value;

use super::ParseError;

pub fn parse_logfmt(line: &str) -> Result<Value, ParseError> {
    let mut pairs = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            if c == '"' {
                return Err(ParseError::Logfmt(format!("a quote inside key {key:?}")));
            }
            key.push(c);
            chars.next();
        }
        if chars.peek() != Some(&'=') {
            pairs.push((Value::from(key), Value::Boolean(true)));
            continue;
        }
        chars.next();
        if key.is_empty() {
            return Err(ParseError::Logfmt("a value without a key".into()));
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some('n') => value.push('\n'),
                        Some('t') => value.push('\t'),
                        Some(other) => value.push(other),
                        None => break,
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(ParseError::Logfmt(format!(
                    "the value of {key:?} never ends its quote"
                )));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        pairs.push((Value::from(key), Value::from(value)));
    }
    if pairs.is_empty() {
        return Err(ParseError::Logfmt("an empty line".into()));
    }
    Ok(Value::Map(pairs))
}
