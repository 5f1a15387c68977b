//! Reading protobuf's JSON mapping by hand: a field may be spelled as in the
//! `.proto` (`cluster_name`, what Envoy's admin prints) or in lowerCamelCase
//! (`clusterName`, what most generators write); 64-bit integers and wrapper
//! types may come as strings; enums as names or numbers. Fields the
//! translation never reads are skipped, so a config from a newer Envoy still
//! loads.
use serde_json::{Map, Value};

/// A field that cannot be read, with the JSON path that leads to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

/// One JSON object and where it sits in the document.
#[derive(Clone)]
pub struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

pub fn root<'a>(value: &'a Value, path: &str) -> Result<Obj<'a>, FieldError> {
    match value {
        Value::Object(map) => Ok(Obj {
            map,
            path: path.to_string(),
        }),
        other => Err(FieldError {
            path: path.to_string(),
            message: format!("expected an object, found {}", kind(other)),
        }),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn camel(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut upper = false;
    for c in field.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

impl<'a> Obj<'a> {
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn err(&self, field: &str, message: impl Into<String>) -> FieldError {
        FieldError {
            path: self.field_path(field),
            message: message.into(),
        }
    }

    fn field_path(&self, field: &str) -> String {
        if self.path.is_empty() {
            field.to_string()
        } else {
            format!("{}.{field}", self.path)
        }
    }

    /// The field, under its proto name or its JSON name; `null` is absent.
    pub fn get(&self, field: &str) -> Option<&'a Value> {
        self.map
            .get(field)
            .or_else(|| self.map.get(&camel(field)))
            .filter(|v| !v.is_null())
    }

    pub fn has(&self, field: &str) -> bool {
        self.get(field).is_some()
    }

    pub fn type_url(&self) -> Option<&'a str> {
        self.map.get("@type").and_then(Value::as_str)
    }

    pub fn string(&self, field: &str) -> Result<String, FieldError> {
        match self.get(field) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => {
                Err(self.err(field, format!("expected a string, found {}", kind(other))))
            }
        }
    }

    /// A list field's items; absent is empty.
    fn items(&self, field: &str) -> Result<&'a [Value], FieldError> {
        match self.get(field) {
            None => Ok(&[]),
            Some(Value::Array(items)) => Ok(items),
            Some(v) => Err(self.err(field, format!("expected a list, found {}", kind(v)))),
        }
    }

    pub fn strings(&self, field: &str) -> Result<Vec<String>, FieldError> {
        self.items(field)?
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(self.err(
                    &format!("{field}[{i}]"),
                    format!("expected a string, found {}", kind(other)),
                )),
            })
            .collect()
    }

    /// An unsigned integer (or a `UInt32Value` wrapper); JSON may quote it.
    pub fn u32(&self, field: &str) -> Result<Option<u32>, FieldError> {
        let Some(v) = self.get(field) else {
            return Ok(None);
        };
        // A wrapper may also be written as `{"value": n}` by some generators.
        let v = match v {
            Value::Object(m) if m.len() == 1 && m.contains_key("value") => &m["value"],
            v => v,
        };
        let parsed = match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        match parsed {
            Some(n) => u32::try_from(n)
                .map(Some)
                .map_err(|_| self.err(field, format!("{n} does not fit in 32 bits"))),
            None => Err(self.err(field, format!("expected an unsigned integer, found {v}"))),
        }
    }

    pub fn bool(&self, field: &str) -> Result<Option<bool>, FieldError> {
        let Some(v) = self.get(field) else {
            return Ok(None);
        };
        let v = match v {
            Value::Object(m) if m.len() == 1 && m.contains_key("value") => &m["value"],
            v => v,
        };
        match v {
            Value::Bool(b) => Ok(Some(*b)),
            other => Err(self.err(field, format!("expected true or false, found {other}"))),
        }
    }

    /// An enum given by name (`"EDS"`) or number (`3`).
    pub fn enumeration(
        &self,
        field: &str,
        from_name: fn(&str) -> Option<i32>,
    ) -> Result<i32, FieldError> {
        match self.get(field) {
            None => Ok(0),
            Some(Value::String(name)) => {
                from_name(name).ok_or_else(|| self.err(field, format!("unknown value {name:?}")))
            }
            Some(Value::Number(n)) => n
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| self.err(field, format!("{n} is not an enum value"))),
            Some(other) => Err(self.err(
                field,
                format!("expected an enum name, found {}", kind(other)),
            )),
        }
    }

    pub fn child(&self, field: &str) -> Result<Option<Obj<'a>>, FieldError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Obj {
                map,
                path: self.field_path(field),
            })),
            Some(other) => {
                Err(self.err(field, format!("expected an object, found {}", kind(other))))
            }
        }
    }

    pub fn children(&self, field: &str) -> Result<Vec<Obj<'a>>, FieldError> {
        self.items(field)?
            .iter()
            .enumerate()
            .map(|(i, item)| root(item, &self.field_path(&format!("{field}[{i}]"))))
            .collect()
    }

    /// Each object of a list field, read by `read`.
    pub fn list<T>(
        &self,
        field: &str,
        read: impl Fn(Obj) -> Result<T, FieldError>,
    ) -> Result<Vec<T>, FieldError> {
        self.children(field)?.into_iter().map(read).collect()
    }

    /// An object field, read by `read` when present.
    pub fn object<T>(
        &self,
        field: &str,
        read: impl FnOnce(Obj) -> Result<T, FieldError>,
    ) -> Result<Option<T>, FieldError> {
        self.child(field)?.map(read).transpose()
    }

    /// The object's fields, for maps keyed by arbitrary names.
    pub fn entries(&self) -> impl Iterator<Item = (&'a String, &'a Value)> {
        self.map.iter()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_proto_and_json_names_and_quoted_numbers() {
        let v =
            json!({"cluster_name": "a", "portValue": "8080", "loadBalancingWeight": {"value": 3}});
        let c = root(&v, "x").unwrap();
        let o = c;
        assert_eq!(o.string("cluster_name").unwrap(), "a");
        assert_eq!(o.u32("port_value").unwrap(), Some(8080));
        assert_eq!(o.u32("load_balancing_weight").unwrap(), Some(3));
        assert_eq!(o.u32("missing").unwrap(), None);
    }

    #[test]
    fn errors_carry_the_path() {
        let v = json!({"endpoints": [{"priority": -1}]});
        let c = root(&v, "cla").unwrap();
        let eps = c.children("endpoints").unwrap();
        let err = eps[0].u32("priority").unwrap_err();
        assert_eq!(err.path, "cla.endpoints[0].priority");
        let err = root(&json!({"a": 1u64 << 40}), "r")
            .unwrap()
            .u32("a")
            .unwrap_err();
        assert!(err.message.contains("32 bits"), "{err}");
    }
}
