//! A Structurizr DSL workspace as a declared architecture: the model's people, software systems,
//! containers and components, and the relationships between them.
//!
//! Elements that contain others (a software system with containers) are groupings, and their
//! innermost elements are the nodes matched with services; relationships are kept at whatever
//! level they are declared. Views, styles, deployment environments and properties are skipped.
//! Structurizr's keywords and identifiers are case-insensitive, and so is this reader.

use std::collections::{BTreeMap, BTreeSet};

use archtrace_analyzer::declared::{Declared, DeclaredNode};

use super::DeclaredError;

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Open,
    Close,
    Arrow,
    Equals,
}

/// The tokens of each line, with the line's number.
fn lines(text: &str) -> Result<Vec<(usize, Vec<Token>)>, String> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut line = 1;
    let mut chars = text.chars().peekable();
    let flush = |line: usize, current: &mut Vec<Token>, out: &mut Vec<(usize, Vec<Token>)>| {
        if !current.is_empty() {
            out.push((line, std::mem::take(current)));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\n' => {
                flush(line, &mut current, &mut out);
                line += 1;
            }
            c if c.is_whitespace() => {}
            '{' => current.push(Token::Open),
            '}' => current.push(Token::Close),
            '"' => {
                let mut value = String::new();
                loop {
                    match chars.next() {
                        None | Some('\n') => {
                            return Err(format!("line {line}: a string is not closed"));
                        }
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('n') => value.push('\n'),
                            Some(other) => value.push(other),
                            None => return Err(format!("line {line}: a string is not closed")),
                        },
                        Some(other) => value.push(other),
                    }
                }
                current.push(Token::Text(value));
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut previous = ' ';
                loop {
                    let Some(c) = chars.next() else {
                        return Err(format!("line {line}: a /* comment is not closed"));
                    };
                    if c == '\n' {
                        flush(line, &mut current, &mut out);
                        line += 1;
                    }
                    if previous == '*' && c == '/' {
                        break;
                    }
                    previous = c;
                }
            }
            '/' if chars.peek() == Some(&'/') && current.is_empty() => {
                while chars.peek().is_some_and(|c| *c != '\n') {
                    chars.next();
                }
            }
            '#' if current.is_empty() => {
                while chars.peek().is_some_and(|c| *c != '\n') {
                    chars.next();
                }
            }
            c => {
                let mut word = String::from(c);
                while let Some(&next) = chars.peek() {
                    if next.is_whitespace() || matches!(next, '{' | '}' | '"') {
                        break;
                    }
                    word.push(next);
                    chars.next();
                }
                current.push(match word.as_str() {
                    "=" => Token::Equals,
                    w if w.starts_with('-') && w.ends_with("->") => Token::Arrow,
                    _ => Token::Word(word),
                });
            }
        }
    }
    flush(line, &mut current, &mut out);
    Ok(out)
}

/// What an open block is.
enum Block {
    /// `workspace`, `model`, `group`, `enterprise`: their contents are the model's.
    Transparent,
    /// An element's body: its identifier path, for children and implicit relationship sources.
    Element(Option<String>),
    /// Anything archtrace does not read (views, styles, properties, deployment, ...).
    Skipped,
}

const ELEMENTS: [&str; 5] = [
    "person",
    "softwaresystem",
    "container",
    "component",
    "element",
];

struct Element {
    name: String,
    kind: String,
    has_children: bool,
}

struct Relationship {
    line: usize,
    from: String,
    to: String,
}

/// Reads one workspace; `source` names it in errors.
pub fn read(source: &str, text: &str) -> Result<Declared, DeclaredError> {
    let invalid = |message: String| DeclaredError::Invalid {
        file: source.to_owned(),
        message,
    };
    let mut elements: Vec<Element> = Vec::new();
    let mut identifiers: BTreeMap<String, usize> = BTreeMap::new();
    let mut relationships = Vec::new();
    let mut stack: Vec<Block> = Vec::new();
    for (line, tokens) in lines(text).map_err(invalid)? {
        let mut tokens = tokens.as_slice();
        while let Some((Token::Close, rest)) = tokens.split_first() {
            if stack.pop().is_none() {
                return Err(invalid(format!("line {line}: `}}` closes no block")));
            }
            tokens = rest;
        }
        if tokens.is_empty() {
            continue;
        }
        let opens = tokens.last() == Some(&Token::Open);
        if opens {
            tokens = &tokens[..tokens.len() - 1];
        }
        let parent = stack.iter().rev().find_map(|b| match b {
            Block::Element(path) => Some(path.clone()),
            _ => None,
        });
        if matches!(stack.last(), Some(Block::Skipped)) {
            if opens {
                stack.push(Block::Skipped);
            }
            continue;
        }
        let word = |i: usize| match tokens.get(i) {
            Some(Token::Word(w)) => Some(w.to_lowercase()),
            _ => None,
        };
        let block = if let Some(arrow) = tokens.iter().position(|t| *t == Token::Arrow) {
            let start = if tokens.get(1) == Some(&Token::Equals) {
                2
            } else {
                0
            };
            let from = match &tokens[start..arrow] {
                [] => match &parent {
                    Some(Some(path)) => path.clone(),
                    _ => {
                        return Err(invalid(format!(
                            "line {line}: a relationship without a source must be inside an element with an identifier"
                        )))
                    }
                },
                [Token::Word(w)] if w.eq_ignore_ascii_case("this") => match &parent {
                    Some(Some(path)) => path.clone(),
                    _ => return Err(invalid(format!("line {line}: `this` outside an element"))),
                },
                [Token::Word(w)] => w.to_lowercase(),
                _ => return Err(invalid(format!("line {line}: expected `source -> destination`"))),
            };
            let Some(Token::Word(to)) = tokens.get(arrow + 1) else {
                return Err(invalid(format!(
                    "line {line}: expected an identifier after `->`"
                )));
            };
            relationships.push(Relationship {
                line,
                from,
                to: to.to_lowercase(),
            });
            Block::Skipped
        } else {
            let (identifier, keyword_at) = if tokens.get(1) == Some(&Token::Equals) {
                (word(0), 2)
            } else {
                (None, 0)
            };
            let keyword = word(keyword_at).unwrap_or_default();
            if keyword == "!include"
                || (keyword == "workspace" && word(1).as_deref() == Some("extends"))
            {
                return Err(invalid(format!(
                    "line {line}: `{keyword}` is not supported: give archtrace the workspace as one file (structurizr-cli can export it)"
                )));
            }
            if ELEMENTS.contains(&keyword.as_str()) {
                let Some(Token::Text(name)) = tokens.get(keyword_at + 1) else {
                    return Err(invalid(format!(
                        "line {line}: a {keyword} needs a name in quotes"
                    )));
                };
                if let Some(Some(parent_path)) = &parent {
                    if let Some(&index) = identifiers.get(parent_path) {
                        elements[index].has_children = true;
                    }
                }
                elements.push(Element {
                    name: name.clone(),
                    kind: keyword.clone(),
                    has_children: false,
                });
                let index = elements.len() - 1;
                let path = identifier.map(|id| {
                    identifiers.insert(id.clone(), index);
                    match &parent {
                        Some(Some(parent_path)) => {
                            let path = format!("{parent_path}.{id}");
                            identifiers.insert(path.clone(), index);
                            path
                        }
                        _ => id,
                    }
                });
                Block::Element(path)
            } else if matches!(
                keyword.as_str(),
                "workspace" | "model" | "group" | "enterprise"
            ) {
                Block::Transparent
            } else if identifier.is_some() {
                return Err(invalid(format!(
                    "line {line}: `{keyword}` is not an element archtrace reads (person, softwareSystem, container, component, element)"
                )));
            } else {
                Block::Skipped
            }
        };
        if opens {
            stack.push(block);
        }
    }
    if !stack.is_empty() {
        return Err(invalid(format!("{} block(s) are not closed", stack.len())));
    }
    let mut declared = Declared {
        sources: vec![source.to_owned()],
        ..Declared::default()
    };
    for element in elements.iter().filter(|e| !e.has_children) {
        declared.add_node(
            &element.name,
            DeclaredNode {
                kind: element.kind.clone(),
                owner: None,
                outside: element.kind == "person",
            },
        );
    }
    let mut unknown = BTreeSet::new();
    for r in &relationships {
        let lookup = |id: &str| identifiers.get(id).map(|&i| elements[i].name.as_str());
        match (lookup(&r.from), lookup(&r.to)) {
            (Some(from), Some(to)) => declared.add_edge(from, to),
            (None, _) => {
                unknown.insert((r.line, r.from.clone()));
            }
            (_, None) => {
                unknown.insert((r.line, r.to.clone()));
            }
        }
    }
    if let Some((line, id)) = unknown.first() {
        return Err(invalid(format!(
            "line {line}: the relationship names `{id}`, which no element of the model has as its identifier"
        )));
    }
    Ok(declared)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORKSPACE: &str = r#"
workspace "Shop" "An example" {
    !identifiers hierarchical
    /* a comment
       over lines */
    model {
        customer = person "Customer"
        // a line comment
        shop = softwareSystem "Shop" {
            web = container "web \"front\"" "" "Node"
            api = container "checkout" {
                -> shop.db "reads" "sql"
                this -> pay "charges"
            }
            db = container "orders-db" "" "PostgreSQL" "Database"
        }
        group "External" {
            pay = softwareSystem "payments" {
                tags "External"
                properties {
                    "x" "y"
                }
            }
        }
        customer -> shop.web "uses"
        rel = shop.web -> shop.api "calls" "HTTPS"
    }
    views {
        systemLandscape {
            include *
            autoLayout
        }
    }
}
"#;

    #[test]
    fn elements_and_relationships_of_a_workspace() {
        let declared = read("shop.dsl", WORKSPACE).unwrap();
        let names: Vec<&str> = declared.nodes.keys().map(String::as_str).collect();
        // "Shop" holds containers: it is a grouping, not a node.
        assert_eq!(
            names,
            [
                "Customer",
                "checkout",
                "orders-db",
                "payments",
                "web \"front\""
            ]
        );
        assert!(declared.nodes["Customer"].outside);
        let edges: Vec<(&str, &str)> = declared
            .edges
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        assert_eq!(
            edges,
            [
                ("Customer", "web \"front\""),
                ("checkout", "orders-db"),
                ("checkout", "payments"),
                ("web \"front\"", "checkout")
            ]
        );
        assert!(!declared.has_owners);
    }

    #[test]
    fn bad_workspaces_are_named_with_the_line() {
        let err = |text: &str| read("w.dsl", text).unwrap_err().to_string();
        assert!(err("model {\n a -> b\n}\n").contains("line 2"));
        assert!(err("model {\n a = softwareSystem \"A\"\n").contains("not closed"));
        assert!(err("workspace {\n !include other.dsl\n}\n").contains("one file"));
        assert!(err("model {\n a = softwareSystem \"A\n}\n").contains("line 2: a string"));
        assert!(err("}\n").contains("closes no block"));
    }
}
