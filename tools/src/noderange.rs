//! xCAT noderanges: `n01-n10`, `n[01-10]`, `f[1-2]n[1-3]`, `node[1-3]-ib`, `n01:n10`,
//! `n10+3`, comma lists, group names, and `-` exclusion.
//!
//! Semantics (xCAT's `noderange(3)`):
//! * A noderange is a comma-separated list of elements (commas inside `[...]` belong to the
//!   bracket: `n[1,3,5-7]`).
//! * A whole element that names a node or group is that node or the group's members; nodes
//!   win over groups. Only otherwise is it read as a range.
//! * An element prefixed with `-` is excluded. Exclusion has precedence whatever the order:
//!   `n1-n10,-n3-n5,n4` is n1,n2,n6..n10.
//! * Zero padding is kept: `n08-n11` gives n08,n09,n10,n11; `n8-n11` gives n8..n11.
//! * Every resulting name must be a node in `nodelist` (xCAT ignores unknown names; an admin
//!   is better served by an error naming them).
//! * The result is sorted naturally (n2 before n10), so output order never depends on how
//!   the range was written.
//!
//! Not supported (refused with a clear message): `/regex`, `^file`, `@` intersection and
//! xCAT's attribute selections (`table.column==value`).

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap, HashSet};

/// Most names one range may produce: a typo like `n1-n99999999` must not eat the memory.
pub const MAX_RANGE: u64 = 100_000;

/// What is wrong with a noderange.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeRangeError {
    #[error("empty noderange")]
    Empty,
    #[error("empty element in noderange {0:?} (two commas in a row?)")]
    EmptyElement(String),
    #[error("{element:?}: unbalanced '[' or ']'")]
    Brackets { element: String },
    #[error("{element:?}: {problem}")]
    BadRange { element: String, problem: String },
    #[error(
        "{element:?}: range of {count} names is larger than the limit of {max}",
        max = MAX_RANGE
    )]
    TooLarge { element: String, count: u64 },
    #[error("{element:?}: {what} is not supported by statelite")]
    Unsupported { element: String, what: &'static str },
    #[error("{element:?}: character {ch:?} cannot appear in a node name")]
    BadChar { element: String, ch: char },
    #[error("unknown node or group name(s) in noderange: {}", .0.join(","))]
    Unknown(Vec<String>),
    #[error("noderange {0:?} selects no nodes")]
    NoNodes(String),
}

/// The nodes and groups of a cluster, as `nodelist` defines them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeIndex {
    nodes: HashSet<String>,
    /// Group -> members in `nodelist` order.
    groups: HashMap<String, Vec<String>>,
}

impl NodeIndex {
    /// Builds the index from `(node, groups)` pairs in `nodelist` order.
    pub fn new(pairs: Vec<(String, Vec<String>)>) -> NodeIndex {
        let mut index = NodeIndex::default();
        for (node, groups) in pairs {
            if !index.nodes.insert(node.clone()) {
                continue; // a repeated node row: the first one counts
            }
            for group in groups {
                index.groups.entry(group).or_default().push(node.clone());
            }
        }
        index
    }

    pub fn is_node(&self, name: &str) -> bool {
        self.nodes.contains(name)
    }

    /// A group's members, `None` when no node is in the group.
    pub fn group_members(&self, name: &str) -> Option<&[String]> {
        self.groups.get(name).map(Vec::as_slice)
    }

    /// Expands a noderange to node names (naturally sorted, deduplicated).
    pub fn expand(&self, noderange: &str) -> Result<Vec<String>, NodeRangeError> {
        let elements = split_elements(noderange)?;
        let mut include: BTreeSet<NaturalName> = BTreeSet::new();
        let mut exclude: HashSet<String> = HashSet::new();
        let mut unknown: Vec<String> = Vec::new();
        // Ranges are capped as a whole too: many large ranges in one noderange add up.
        let mut generated: u64 = 0;
        for element in elements {
            let (excluding, body) = match element.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, element),
            };
            if body.is_empty() {
                return Err(NodeRangeError::EmptyElement(noderange.to_string()));
            }
            let mut found = Vec::new();
            let names = self.names_of(body)?;
            generated += names.len() as u64;
            if generated > MAX_RANGE {
                return Err(NodeRangeError::TooLarge {
                    element: noderange.to_string(),
                    count: generated,
                });
            }
            for name in names {
                if self.is_node(&name) {
                    found.push(name);
                } else if let Some(members) = self.group_members(&name) {
                    found.extend(members.iter().cloned());
                } else if !excluding {
                    // Excluding a name that does not exist is harmless.
                    unknown.push(name);
                }
            }
            if excluding {
                exclude.extend(found);
            } else {
                include.extend(found.into_iter().map(NaturalName));
            }
        }
        if !unknown.is_empty() {
            unknown.sort_by(|a, b| natural_cmp(a, b));
            unknown.dedup();
            return Err(NodeRangeError::Unknown(unknown));
        }
        let nodes: Vec<String> = include
            .into_iter()
            .map(|n| n.0)
            .filter(|n| !exclude.contains(n))
            .collect();
        if nodes.is_empty() {
            return Err(NodeRangeError::NoNodes(noderange.to_string()));
        }
        Ok(nodes)
    }

    /// The names one element stands for, before group expansion: the element itself when it
    /// is a known node or group, else its range expansion.
    fn names_of(&self, element: &str) -> Result<Vec<String>, NodeRangeError> {
        if self.is_node(element) || self.group_members(element).is_some() {
            return Ok(vec![element.to_string()]);
        }
        expand_element(element)
    }
}

/// Splits at commas outside brackets.
fn split_elements(noderange: &str) -> Result<Vec<&str>, NodeRangeError> {
    let trimmed = noderange.trim();
    if trimmed.is_empty() {
        return Err(NodeRangeError::Empty);
    }
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0usize;
    for (i, c) in trimmed.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| NodeRangeError::Brackets {
                        element: trimmed.to_string(),
                    })?
            }
            ',' if depth == 0 => {
                out.push(trimmed[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(NodeRangeError::Brackets {
            element: trimmed.to_string(),
        });
    }
    out.push(trimmed[start..].trim());
    if out.iter().any(|e| e.is_empty()) {
        return Err(NodeRangeError::EmptyElement(noderange.to_string()));
    }
    Ok(out)
}

/// Expands one element that is not a plain known name: brackets, `a-b`/`a:b`, `a+n`, or a
/// single name.
pub fn expand_element(element: &str) -> Result<Vec<String>, NodeRangeError> {
    let unsupported = |what| NodeRangeError::Unsupported {
        element: element.to_string(),
        what,
    };
    match element.chars().next() {
        Some('/') => return Err(unsupported("a regular expression noderange (/regex)")),
        Some('^') => return Err(unsupported("a file noderange (^file)")),
        _ => {}
    }
    if element.contains('@') {
        return Err(unsupported("noderange intersection (@)"));
    }
    if element.contains("==") || element.contains("!=") || element.contains("=~") {
        return Err(unsupported("an attribute selection (table.column==value)"));
    }
    if let Some(ch) = element
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || "-_.[]:+,".contains(c)))
    {
        return Err(NodeRangeError::BadChar {
            element: element.to_string(),
            ch,
        });
    }
    if element.contains('[') || element.contains(']') {
        return expand_brackets(element);
    }
    if let Some(names) = try_dash_or_colon_range(element)? {
        return Ok(names);
    }
    if let Some((base, count)) = element.rsplit_once('+') {
        return expand_increment(element, base, count);
    }
    Ok(vec![element.to_string()])
}

fn bad(element: &str, problem: impl Into<String>) -> NodeRangeError {
    NodeRangeError::BadRange {
        element: element.to_string(),
        problem: problem.into(),
    }
}

/// `f[1-2]n[01-03]-ib`: the product of every bracket's values, in order.
fn expand_brackets(element: &str) -> Result<Vec<String>, NodeRangeError> {
    let mut results: Vec<String> = vec![String::new()];
    let mut rest = element;
    while !rest.is_empty() {
        match rest.find('[') {
            None => {
                if rest.contains(']') {
                    return Err(NodeRangeError::Brackets {
                        element: element.to_string(),
                    });
                }
                results.iter_mut().for_each(|r| r.push_str(rest));
                rest = "";
            }
            Some(open) => {
                let literal = &rest[..open];
                if literal.contains(']') {
                    return Err(NodeRangeError::Brackets {
                        element: element.to_string(),
                    });
                }
                let after = &rest[open + 1..];
                let close = after.find(']').ok_or_else(|| NodeRangeError::Brackets {
                    element: element.to_string(),
                })?;
                let inner = &after[..close];
                if inner.contains('[') {
                    return Err(NodeRangeError::Brackets {
                        element: element.to_string(),
                    });
                }
                let values = bracket_values(element, inner)?;
                let count = (results.len() as u64).saturating_mul(values.len() as u64);
                if count > MAX_RANGE {
                    return Err(NodeRangeError::TooLarge {
                        element: element.to_string(),
                        count,
                    });
                }
                let mut next = Vec::with_capacity(count as usize);
                for r in &results {
                    for v in &values {
                        next.push(format!("{r}{literal}{v}"));
                    }
                }
                results = next;
                rest = &after[close + 1..];
            }
        }
    }
    Ok(results)
}

/// The inside of one bracket: `01-10`, `1:3`, `1,3,5-7`.
fn bracket_values(element: &str, inner: &str) -> Result<Vec<String>, NodeRangeError> {
    let mut values = Vec::new();
    for part in inner.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(bad(element, "empty value inside [...]"));
        }
        let sep = part.find(['-', ':']);
        match sep {
            None => {
                if !part.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad(
                        element,
                        format!("{part:?} inside [...] is not a number or a range like 01-10"),
                    ));
                }
                values.push(part.to_string());
            }
            Some(i) => {
                let (lo, hi) = (&part[..i], &part[i + 1..]);
                values.extend(numeric_range(element, lo, hi)?);
            }
        }
        if values.len() as u64 > MAX_RANGE {
            return Err(NodeRangeError::TooLarge {
                element: element.to_string(),
                count: values.len() as u64,
            });
        }
    }
    Ok(values)
}

/// Numbers from `lo` to `hi` inclusive, zero-padded to `lo`'s width when `lo` is padded
/// (or when both ends have the same width).
fn numeric_range(element: &str, lo: &str, hi: &str) -> Result<Vec<String>, NodeRangeError> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(lo) || !digits(hi) {
        return Err(bad(
            element,
            format!("{lo:?}-{hi:?} is not a numeric range like 01-10"),
        ));
    }
    let parse = |s: &str| {
        s.parse::<u64>()
            .map_err(|_| bad(element, format!("{s} is too large a number")))
    };
    let (a, b) = (parse(lo)?, parse(hi)?);
    if a > b {
        return Err(bad(
            element,
            format!("the range runs backwards ({lo} is after {hi})"),
        ));
    }
    let count = b - a + 1;
    if count > MAX_RANGE {
        return Err(NodeRangeError::TooLarge {
            element: element.to_string(),
            count,
        });
    }
    let padded = |s: &str| s.len() > 1 && s.starts_with('0');
    let width = if padded(lo) || lo.len() == hi.len() {
        lo.len()
    } else if padded(hi) {
        return Err(bad(
            element,
            format!("inconsistent zero padding ({lo} and {hi})"),
        ));
    } else {
        0
    };
    if padded(hi) && hi.len() != lo.len() {
        return Err(bad(
            element,
            format!("inconsistent zero padding ({lo} and {hi})"),
        ));
    }
    Ok((a..=b).map(|n| format!("{n:0width$}")).collect())
}

/// A name cut into runs of digits and non-digits: `rack1n01-ib` is
/// ["rack", "1", "n", "01", "-ib"].
fn runs(name: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = name.as_bytes();
    for i in 1..=bytes.len() {
        if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[i - 1].is_ascii_digit() {
            out.push(&name[start..i]);
            start = i;
        }
    }
    out
}

/// `n01-n10`, `rack1n01-rack1n10`, `node1-ib-node3-ib`, `n01:n10`. The two ends must be the
/// same except for one number. Returns `None` when the element is not a range at all (no
/// separator splits it into two names of the same shape), an error when it looks like a
/// range but is malformed.
fn try_dash_or_colon_range(element: &str) -> Result<Option<Vec<String>>, NodeRangeError> {
    let is_number = |run: &str| run.as_bytes()[0].is_ascii_digit();
    let has_digit = |s: &str| s.bytes().any(|b| b.is_ascii_digit());
    // (separator position, index of the run that counts)
    let mut candidates = Vec::new();
    // A split whose two ends both carry a number but differ elsewhere too: `n01-m10`.
    let mut mismatch = None;
    for (i, c) in element.char_indices() {
        if c != '-' && c != ':' {
            continue;
        }
        let (left, right) = (&element[..i], &element[i + 1..]);
        if left.is_empty() || right.is_empty() {
            continue;
        }
        let (l, r) = (runs(left), runs(right));
        let differing: Vec<usize> = if l.len() == r.len() {
            (0..l.len()).filter(|&k| l[k] != r[k]).collect()
        } else {
            Vec::new()
        };
        match differing.as_slice() {
            // `n1-n1`: a one-name range (the last number counts).
            [] if l.len() == r.len() => {
                if let Some(k) = (0..l.len()).rev().find(|&k| is_number(l[k])) {
                    candidates.push((i, k));
                }
            }
            [k] if is_number(l[*k]) && is_number(r[*k]) => candidates.push((i, *k)),
            _ => {
                if (c == ':' || (has_digit(left) && has_digit(right))) && mismatch.is_none() {
                    mismatch = Some(format!(
                        "the two ends {left:?} and {right:?} must differ only in one number \
                         (mismatched prefix or suffix)"
                    ));
                }
            }
        }
    }
    match candidates.as_slice() {
        [] => match mismatch {
            Some(problem) => Err(bad(element, problem)),
            None => Ok(None),
        },
        [(i, k)] => {
            let (l, r) = (runs(&element[..*i]), runs(&element[*i + 1..]));
            let prefix: String = l[..*k].concat();
            let suffix: String = l[*k + 1..].concat();
            let numbers = numeric_range(element, l[*k], r[*k])?;
            Ok(Some(
                numbers
                    .into_iter()
                    .map(|n| format!("{prefix}{n}{suffix}"))
                    .collect(),
            ))
        }
        _ => Err(bad(
            element,
            "ambiguous range: more than one '-' could separate its two ends (write it as \
             n[1-3]-ib)",
        )),
    }
}

/// `n10+3`: n10, n11, n12, n13.
fn expand_increment(element: &str, base: &str, count: &str) -> Result<Vec<String>, NodeRangeError> {
    let count: u64 = count
        .parse()
        .map_err(|_| bad(element, format!("{count:?} after '+' is not a count")))?;
    let r = runs(base);
    let k = r
        .iter()
        .rposition(|run| run.as_bytes()[0].is_ascii_digit())
        .ok_or_else(|| bad(element, format!("{base:?} has no number to count up from")))?;
    let start: u64 = r[k]
        .parse()
        .map_err(|_| bad(element, format!("{} is too large a number", r[k])))?;
    let end = start
        .checked_add(count)
        .ok_or_else(|| bad(element, "count too large"))?;
    if count >= MAX_RANGE {
        return Err(NodeRangeError::TooLarge {
            element: element.to_string(),
            count: count.saturating_add(1),
        });
    }
    let width = if r[k].len() > 1 && r[k].starts_with('0') {
        r[k].len()
    } else {
        0
    };
    let prefix = r[..k].concat();
    let suffix = r[k + 1..].concat();
    Ok((start..=end)
        .map(|n| format!("{prefix}{n:0width$}{suffix}"))
        .collect())
}

/// Natural order: digit runs compare by value (then by length, so `n01` and `n1` differ),
/// everything else bytewise.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (ra, rb) = (runs(a), runs(b));
    for (x, y) in ra.iter().zip(rb.iter()) {
        let xd = x.as_bytes()[0].is_ascii_digit();
        let yd = y.as_bytes()[0].is_ascii_digit();
        let ord = if xd && yd {
            let xt = x.trim_start_matches('0');
            let yt = y.trim_start_matches('0');
            xt.len()
                .cmp(&yt.len())
                .then_with(|| xt.cmp(yt))
                .then_with(|| x.len().cmp(&y.len()))
        } else {
            x.cmp(y)
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    ra.len().cmp(&rb.len()).then_with(|| a.cmp(b))
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct NaturalName(String);

impl Ord for NaturalName {
    fn cmp(&self, other: &Self) -> Ordering {
        natural_cmp(&self.0, &other.0)
    }
}

impl PartialOrd for NaturalName {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> NodeIndex {
        let mut pairs = Vec::new();
        for i in 1..=12 {
            let groups = if i <= 6 {
                vec!["compute".to_string(), "tokyo".to_string()]
            } else {
                vec!["compute".to_string(), "japan".to_string()]
            };
            pairs.push((format!("n{i:02}"), groups));
        }
        for i in 1..=3 {
            pairs.push((format!("node{i}-ib"), vec!["ib".to_string()]));
        }
        for f in 1..=2 {
            for n in 1..=3 {
                pairs.push((format!("f{f}n{n}"), vec!["frames".to_string()]));
            }
        }
        pairs.push(("login-1".into(), vec!["login".into()]));
        pairs.push(("rack1n01".into(), vec![]));
        pairs.push(("rack1n02".into(), vec![]));
        pairs.push(("n7".into(), vec![]));
        NodeIndex::new(pairs)
    }

    fn ex(r: &str) -> Vec<String> {
        cluster().expand(r).unwrap_or_else(|e| panic!("{r}: {e}"))
    }

    fn err(r: &str) -> NodeRangeError {
        cluster().expand(r).expect_err(r)
    }

    #[test]
    fn ranges_keep_padding() {
        assert_eq!(ex("n01-n03"), ["n01", "n02", "n03"]);
        assert_eq!(ex("n[01-03]"), ["n01", "n02", "n03"]);
        assert_eq!(ex("n[01:03]"), ["n01", "n02", "n03"]);
        assert_eq!(ex("n01:n03"), ["n01", "n02", "n03"]);
        assert_eq!(ex("n09-n11"), ["n09", "n10", "n11"]);
        assert_eq!(ex("n10+2"), ["n10", "n11", "n12"]);
        assert_eq!(ex("rack1n01-rack1n02"), ["rack1n01", "rack1n02"]);
        assert_eq!(ex("n01-n01"), ["n01"]);
        assert_eq!(
            expand_element("n8-n11").unwrap(),
            ["n8", "n9", "n10", "n11"]
        );
        assert_eq!(expand_element("n[8-10]").unwrap(), ["n8", "n9", "n10"]);
    }

    #[test]
    fn brackets_with_suffix_products_and_lists() {
        assert_eq!(ex("node[1-3]-ib"), ["node1-ib", "node2-ib", "node3-ib"]);
        assert_eq!(
            ex("f[1-2]n[1-3]"),
            ["f1n1", "f1n2", "f1n3", "f2n1", "f2n2", "f2n3"]
        );
        assert_eq!(ex("n[01,03,10-11]"), ["n01", "n03", "n10", "n11"]);
        assert_eq!(
            ex("node1-ib-node3-ib"),
            ["node1-ib", "node2-ib", "node3-ib"]
        );
    }

    #[test]
    fn lists_groups_and_exclusion() {
        assert_eq!(ex("n03,n01,n02,n01"), ["n01", "n02", "n03"]);
        assert_eq!(ex("tokyo").len(), 6);
        assert_eq!(ex("compute,-tokyo"), ex("n07-n12"));
        assert_eq!(
            ex("-n02,n01-n03"),
            ["n01", "n03"],
            "exclusion wins in any order"
        );
        assert_eq!(
            ex("n01-n06,-n02-n04,n03"),
            ["n01", "n05", "n06"],
            "xCAT: exclusion has precedence"
        );
        assert_eq!(ex("compute,-n[02-12]"), ["n01"]);
        assert_eq!(ex("login-1"), ["login-1"], "a known name is never a range");
        assert_eq!(ex("n7,n07"), ["n7", "n07"]);
        assert_eq!(
            ex("frames,-f1n2,-nosuchnode"),
            ["f1n1", "f1n3", "f2n1", "f2n2", "f2n3"]
        );
        assert_eq!(ex(" n01 , n02 "), ["n01", "n02"]);
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["n10", "n9", "n010", "a", "n1b", "n1"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["a", "n1", "n1b", "n9", "n10", "n010"]);
    }

    #[test]
    fn errors() {
        assert_eq!(err(""), NodeRangeError::Empty);
        assert!(matches!(err("n01,,n02"), NodeRangeError::EmptyElement(_)));
        assert!(matches!(err("n01,-"), NodeRangeError::EmptyElement(_)));
        assert!(matches!(err("n[01-03"), NodeRangeError::Brackets { .. }));
        assert!(matches!(err("n01-03]"), NodeRangeError::Brackets { .. }));
        assert!(matches!(err("n[[1]]"), NodeRangeError::Brackets { .. }));
        let e = err("n10-n01");
        assert!(e.to_string().contains("backwards"), "{e}");
        let e = err("n[10-1]");
        assert!(e.to_string().contains("backwards"), "{e}");
        let e = err("n01-m10");
        assert!(e.to_string().contains("mismatched prefix"), "{e}");
        let e = err("n01:x01y");
        assert!(matches!(e, NodeRangeError::BadRange { .. }), "{e}");
        let e = err("n1-n200000");
        assert!(
            matches!(e, NodeRangeError::TooLarge { count: 200000, .. }),
            "{e}"
        );
        assert!(matches!(
            err("n[1-1000]m[1-1000]"),
            NodeRangeError::TooLarge { .. }
        ));
        assert!(matches!(err("n1+100000"), NodeRangeError::TooLarge { .. }));
        assert!(matches!(
            err("n[1-60000],m[1-60000]"),
            NodeRangeError::TooLarge { count: 120000, .. }
        ));
        assert!(matches!(err("n[a-b]"), NodeRangeError::BadRange { .. }));
        assert!(matches!(err("n[1,,2]"), NodeRangeError::BadRange { .. }));
        assert!(matches!(err("n[x]"), NodeRangeError::BadRange { .. }));
        assert!(err("n[1-010]").to_string().contains("padding"));
        assert!(matches!(err("n1+x"), NodeRangeError::BadRange { .. }));
        assert!(matches!(err("abc+3"), NodeRangeError::BadRange { .. }));
        assert!(matches!(
            err("n99999999999999999999-n99999999999999999999"),
            NodeRangeError::BadRange { .. }
        ));
        for (r, what) in [
            ("/n0.*", "regular expression"),
            ("^/tmp/nodes", "file"),
            ("compute@tokyo", "intersection"),
            ("nodetype.os==rhels", "attribute"),
        ] {
            let e = err(r);
            assert!(matches!(e, NodeRangeError::Unsupported { .. }), "{r}: {e}");
            assert!(e.to_string().contains(what), "{e}");
        }
        assert!(matches!(
            err("n 01"),
            NodeRangeError::BadChar { ch: ' ', .. }
        ));
        assert!(matches!(
            err("n01;rm"),
            NodeRangeError::BadChar { ch: ';', .. }
        ));
        assert_eq!(
            err("n01,n13,zz,n13"),
            NodeRangeError::Unknown(vec!["n13".into(), "zz".into()])
        );
        assert!(matches!(err("n01,-n01"), NodeRangeError::NoNodes(_)));
        assert!(matches!(err("-n01"), NodeRangeError::NoNodes(_)));
    }
}
