//! The small subset of XML that OpenCV's `FileStorage` writes: nested elements, text,
//! comments, a declaration. Attributes are skipped, entities are not needed by cascades.

/// One element: its tag name, child elements in order and its text (whitespace-joined).
#[derive(Debug, Default)]
pub(crate) struct Element {
    pub(crate) name: String,
    pub(crate) children: Vec<Element>,
    pub(crate) text: String,
}

impl Element {
    /// The first child named `name`.
    pub(crate) fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The first child named `name`, or an error naming it.
    pub(crate) fn require(&self, name: &str) -> Result<&Element, String> {
        self.child(name)
            .ok_or_else(|| format!("<{}> has no <{name}> element", self.name))
    }

    /// The text of the child `name` parsed as a number.
    pub(crate) fn number<T: std::str::FromStr>(&self, name: &str) -> Result<T, String> {
        let text = self.require(name)?.text.trim();
        text.parse()
            .map_err(|_| format!("<{name}> in <{}> is not a number: {text:?}", self.name))
    }

    /// The whitespace-separated numbers in this element's text.
    pub(crate) fn numbers<T: std::str::FromStr>(&self) -> Result<Vec<T>, String> {
        self.text
            .split_ascii_whitespace()
            .map(|t| {
                t.parse()
                    .map_err(|_| format!("<{}> holds a non-number {t:?}", self.name))
            })
            .collect()
    }
}

/// Parses a whole document and returns its root element.
pub(crate) fn parse(src: &str) -> Result<Element, String> {
    let mut stack: Vec<Element> = vec![Element::default()];
    let mut rest = src;
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            push_text(&mut stack, rest);
            break;
        };
        push_text(&mut stack, &rest[..lt]);
        rest = &rest[lt..];
        if let Some(body) = rest.strip_prefix("<!--") {
            let end = body.find("-->").ok_or("unterminated comment")?;
            rest = &body[end + 3..];
        } else if rest.starts_with("<?") || rest.starts_with("<!") {
            let end = rest.find('>').ok_or("unterminated declaration")?;
            rest = &rest[end + 1..];
        } else if let Some(body) = rest.strip_prefix("</") {
            let end = body.find('>').ok_or("unterminated end tag")?;
            let name = body[..end].trim();
            let done = stack.pop().filter(|_| !stack.is_empty());
            match done {
                Some(el) if el.name == name => stack
                    .last_mut()
                    .expect("the document root stays on the stack")
                    .children
                    .push(el),
                Some(el) => return Err(format!("</{name}> closes <{}>", el.name)),
                None => return Err(format!("</{name}> without an open element")),
            }
            rest = &body[end + 1..];
        } else {
            let end = rest.find('>').ok_or("unterminated start tag")?;
            let tag = &rest[1..end];
            let (tag, empty) = match tag.strip_suffix('/') {
                Some(t) => (t, true),
                None => (tag, false),
            };
            let name = tag
                .split_ascii_whitespace()
                .next()
                .unwrap_or("")
                .to_string();
            if name.is_empty() {
                return Err("a tag without a name".into());
            }
            let el = Element {
                name,
                ..Element::default()
            };
            if empty {
                stack
                    .last_mut()
                    .expect("the document root stays on the stack")
                    .children
                    .push(el);
            } else {
                stack.push(el);
            }
            rest = &rest[end + 1..];
        }
    }
    if stack.len() != 1 {
        let open = stack.last().map(|e| e.name.clone()).unwrap_or_default();
        return Err(format!("the document ends inside <{open}>"));
    }
    let mut root = stack.pop().expect("checked above");
    match root.children.len() {
        1 => Ok(root.children.remove(0)),
        0 => Err("no element found".into()),
        n => Err(format!("{n} top-level elements, expected one")),
    }
}

fn push_text(stack: &mut [Element], text: &str) {
    let text = text.trim();
    if text.is_empty() {
        return;
    }
    let el = stack
        .last_mut()
        .expect("the document root stays on the stack");
    if !el.text.is_empty() {
        el.text.push(' ');
    }
    el.text.push_str(text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_elements_text_and_comments() {
        let doc = "<?xml version=\"1.0\"?>\n<!-- a comment <with> tags -->\n<a type_id=\"x\">\
                   <b>1 2\n 3</b><!-- c --><_>x</_><_>y</_><e/></a>";
        let root = parse(doc).unwrap();
        assert_eq!(root.name, "a");
        assert_eq!(
            root.child("b").unwrap().numbers::<i32>().unwrap(),
            vec![1, 2, 3]
        );
        let names: Vec<_> = root.children.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["b", "_", "_", "e"]);
        assert_eq!(root.children[2].text, "y");
    }

    #[test]
    fn malformed_documents_are_errors() {
        assert!(parse("<a><b></a>").unwrap_err().contains("closes"));
        assert!(parse("<a>").unwrap_err().contains("ends inside"));
        assert!(parse("<!-- x").unwrap_err().contains("comment"));
        assert!(parse("plain text").unwrap_err().contains("no element"));
        assert!(parse("<a/><b/>").unwrap_err().contains("top-level"));
    }
}
