//! Avro schema JSON -> an arena of nodes; named types are referenced by index, so
//! recursive and reused types cost nothing extra.

use serde_json::{Map, Value};
use std::collections::HashMap;

pub type NodeId = usize;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Logical {
    None,
    Date,
    TimestampMillis,
    TimestampMicros,
    TimestampNanos,
    Decimal { precision: u32, scale: u32 },
    Uuid,
}

#[derive(Debug)]
pub enum Node {
    Null,
    Boolean,
    Int(Logical),
    Long(Logical),
    Float,
    Double,
    Bytes(Logical),
    String(Logical),
    /// Fields as (name, pre-rendered JSON key `"name":`, type).
    Record {
        name: String,
        fields: Vec<(String, Vec<u8>, NodeId)>,
    },
    /// Symbols pre-rendered as JSON strings.
    Enum {
        name: String,
        symbols: Vec<String>,
        json: Vec<Vec<u8>>,
    },
    Array(NodeId),
    Map(NodeId),
    Union(Vec<NodeId>),
    Fixed {
        name: String,
        size: usize,
        logical: Logical,
    },
}

pub struct Schema {
    pub nodes: Vec<Node>,
    pub root: NodeId,
    /// Whether a value of the node can take zero bytes (bounds item counts of blocks).
    pub empty_ok: Vec<bool>,
}

struct Parser {
    nodes: Vec<Node>,
    names: HashMap<String, NodeId>,
}

fn primitive(name: &str) -> Option<Node> {
    Some(match name {
        "null" => Node::Null,
        "boolean" => Node::Boolean,
        "int" => Node::Int(Logical::None),
        "long" => Node::Long(Logical::None),
        "float" => Node::Float,
        "double" => Node::Double,
        "bytes" => Node::Bytes(Logical::None),
        "string" => Node::String(Logical::None),
        _ => return None,
    })
}

pub fn json_string(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 2);
    crate::text::write_str(&mut out, s);
    out
}

fn fullname(obj: &Map<String, Value>, ns: &str) -> Result<(String, String), String> {
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| "a named type has no \"name\"".to_string())?;
    if let Some(dot) = name.rfind('.') {
        return Ok((name.to_string(), name[..dot].to_string()));
    }
    let space = match obj.get("namespace") {
        Some(Value::String(s)) => s.as_str(),
        _ => ns,
    };
    let full = if space.is_empty() {
        name.to_string()
    } else {
        format!("{space}.{name}")
    };
    Ok((full, space.to_string()))
}

/// The logical type of a primitive or fixed; unknown or invalid ones are ignored (Avro spec).
fn logical(obj: &Map<String, Value>, base: &str) -> Logical {
    let Some(lt) = obj.get("logicalType").and_then(Value::as_str) else {
        return Logical::None;
    };
    match (lt, base) {
        ("date", "int") => Logical::Date,
        ("timestamp-millis" | "local-timestamp-millis", "long") => Logical::TimestampMillis,
        ("timestamp-micros" | "local-timestamp-micros", "long") => Logical::TimestampMicros,
        ("timestamp-nanos" | "local-timestamp-nanos", "long") => Logical::TimestampNanos,
        ("uuid", "string") => Logical::Uuid,
        ("uuid", "fixed") if obj.get("size").and_then(Value::as_u64) == Some(16) => Logical::Uuid,
        ("decimal", "bytes" | "fixed") => {
            let precision = obj.get("precision").and_then(Value::as_u64).unwrap_or(0);
            let scale = obj.get("scale").and_then(Value::as_u64).unwrap_or(0);
            if precision == 0 || scale > precision || precision > u32::MAX as u64 {
                Logical::None
            } else {
                Logical::Decimal {
                    precision: precision as u32,
                    scale: scale as u32,
                }
            }
        }
        _ => Logical::None,
    }
}

impl Parser {
    fn push(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn define(&mut self, full: String, node: Node) -> Result<NodeId, String> {
        if self.names.contains_key(&full) {
            return Err(format!("type `{full}` is defined twice"));
        }
        let id = self.push(node);
        self.names.insert(full, id);
        Ok(id)
    }

    fn reference(&self, name: &str, ns: &str) -> Result<NodeId, String> {
        if !ns.is_empty() && !name.contains('.') {
            if let Some(&id) = self.names.get(&format!("{ns}.{name}")) {
                return Ok(id);
            }
        }
        self.names
            .get(name)
            .copied()
            .ok_or_else(|| format!("unknown type `{name}`"))
    }

    fn parse(&mut self, v: &Value, ns: &str, depth: usize) -> Result<NodeId, String> {
        if depth > 200 {
            return Err("schema nested too deeply".into());
        }
        match v {
            Value::String(s) => match primitive(s) {
                Some(node) => Ok(self.push(node)),
                None => self.reference(s, ns),
            },
            Value::Array(branches) => {
                let ids = branches
                    .iter()
                    .map(|b| self.parse(b, ns, depth + 1))
                    .collect::<Result<Vec<_>, _>>()?;
                if ids.is_empty() {
                    return Err("a union has no branches".into());
                }
                Ok(self.push(Node::Union(ids)))
            }
            Value::Object(obj) => self.parse_object(obj, ns, depth),
            other => Err(format!("not an Avro type: {other}")),
        }
    }

    fn parse_object(
        &mut self,
        obj: &Map<String, Value>,
        ns: &str,
        depth: usize,
    ) -> Result<NodeId, String> {
        let ty = match obj.get("type") {
            Some(Value::String(s)) => s.as_str(),
            Some(nested) => return self.parse(nested, ns, depth + 1),
            None => return Err("a type object has no \"type\"".into()),
        };
        match ty {
            "record" | "error" => {
                let (full, space) = fullname(obj, ns)?;
                let id = self.define(
                    full.clone(),
                    Node::Record {
                        name: full,
                        fields: vec![],
                    },
                )?;
                let fields = obj
                    .get("fields")
                    .and_then(Value::as_array)
                    .ok_or_else(|| format!("record `{}` has no \"fields\" list", self.name(id)))?;
                let mut parsed = Vec::with_capacity(fields.len());
                for f in fields {
                    let name = f
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| format!("a field of `{}` has no name", self.name(id)))?;
                    let fty = f
                        .get("type")
                        .ok_or_else(|| format!("field `{name}` has no type"))?;
                    let fid = self.parse(fty, &space, depth + 1)?;
                    let mut key = json_string(name);
                    key.push(b':');
                    parsed.push((name.to_string(), key, fid));
                }
                if let Node::Record { fields, .. } = &mut self.nodes[id] {
                    *fields = parsed;
                }
                Ok(id)
            }
            "enum" => {
                let (full, _) = fullname(obj, ns)?;
                let symbols: Vec<String> = obj
                    .get("symbols")
                    .and_then(Value::as_array)
                    .ok_or_else(|| format!("enum `{full}` has no \"symbols\" list"))?
                    .iter()
                    .map(|s| s.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(|| format!("enum `{full}` has a symbol that is not a string"))?;
                let json = symbols.iter().map(|s| json_string(s)).collect();
                self.define(
                    full.clone(),
                    Node::Enum {
                        name: full,
                        symbols,
                        json,
                    },
                )
            }
            "fixed" => {
                let (full, _) = fullname(obj, ns)?;
                let size = obj
                    .get("size")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| format!("fixed `{full}` has no valid \"size\""))?;
                let size = usize::try_from(size).map_err(|_| format!("fixed `{full}` too big"))?;
                let logical = logical(obj, "fixed");
                self.define(
                    full.clone(),
                    Node::Fixed {
                        name: full,
                        size,
                        logical,
                    },
                )
            }
            "array" => {
                let items = obj.get("items").ok_or("an array has no \"items\"")?;
                let item = self.parse(items, ns, depth + 1)?;
                Ok(self.push(Node::Array(item)))
            }
            "map" => {
                let values = obj.get("values").ok_or("a map has no \"values\"")?;
                let value = self.parse(values, ns, depth + 1)?;
                Ok(self.push(Node::Map(value)))
            }
            name => match primitive(name) {
                Some(node) => {
                    let lt = logical(obj, name);
                    Ok(self.push(match node {
                        Node::Int(_) => Node::Int(lt),
                        Node::Long(_) => Node::Long(lt),
                        Node::Bytes(_) => Node::Bytes(lt),
                        Node::String(_) => Node::String(lt),
                        other => other,
                    }))
                }
                None => self.reference(name, ns),
            },
        }
    }

    fn name(&self, id: NodeId) -> &str {
        match &self.nodes[id] {
            Node::Record { name, .. } => name,
            _ => "?",
        }
    }
}

impl Schema {
    pub fn parse(text: &str) -> Result<Schema, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("writer schema is not JSON: {e}"))?;
        let mut p = Parser {
            nodes: vec![],
            names: HashMap::new(),
        };
        let root = p.parse(&value, "", 0)?;
        let mut schema = Schema {
            empty_ok: vec![],
            nodes: p.nodes,
            root,
        };
        schema.empty_ok = schema.zero_size();
        Ok(schema)
    }

    /// Which nodes may encode in zero bytes: null, empty records/fixed, records of such.
    fn zero_size(&self) -> Vec<bool> {
        // a fixpoint from "all false": a recursive record can only end in a zero-size
        // branch, so starting pessimistic gives the right answer for finite values
        let mut z = vec![false; self.nodes.len()];
        loop {
            let mut changed = false;
            for (i, n) in self.nodes.iter().enumerate() {
                let v = match n {
                    Node::Null => true,
                    Node::Fixed { size, .. } => *size == 0,
                    Node::Record { fields, .. } => fields.iter().all(|f| z[f.2]),
                    _ => false,
                };
                if v && !z[i] {
                    z[i] = true;
                    changed = true;
                }
            }
            if !changed {
                return z;
            }
        }
    }

    /// Short description of a type for error messages.
    pub fn describe(&self, id: NodeId) -> String {
        fn lt(l: Logical) -> &'static str {
            match l {
                Logical::None => "",
                Logical::Date => " (date)",
                Logical::TimestampMillis => " (timestamp-millis)",
                Logical::TimestampMicros => " (timestamp-micros)",
                Logical::TimestampNanos => " (timestamp-nanos)",
                Logical::Decimal { .. } => " (decimal)",
                Logical::Uuid => " (uuid)",
            }
        }
        match &self.nodes[id] {
            Node::Null => "null".into(),
            Node::Boolean => "boolean".into(),
            Node::Int(l) => format!("int{}", lt(*l)),
            Node::Long(l) => format!("long{}", lt(*l)),
            Node::Float => "float".into(),
            Node::Double => "double".into(),
            Node::Bytes(l) => format!("bytes{}", lt(*l)),
            Node::String(l) => format!("string{}", lt(*l)),
            Node::Record { name, .. } => format!("record {name}"),
            Node::Enum { name, .. } => format!("enum {name}"),
            Node::Array(_) => "array".into(),
            Node::Map(_) => "map".into(),
            Node::Union(b) => {
                let parts: Vec<String> = b.iter().map(|&i| self.describe_short(i)).collect();
                format!("union [{}]", parts.join(", "))
            }
            Node::Fixed {
                name,
                size,
                logical,
            } => format!("fixed {name}[{size}]{}", lt(*logical)),
        }
    }

    fn describe_short(&self, id: NodeId) -> String {
        match &self.nodes[id] {
            Node::Union(_) => "union".into(),
            _ => self.describe(id),
        }
    }
}
