//! Query strings, parsed once and strictly: `form_urlencoded` decodes them (the codec
//! axum's own `Query` uses), and a small serde deserializer maps the pairs onto a
//! handler's query type. A key may appear once unless its field is a list (`label`);
//! a repeat is a 400 problem, never a silent last-one-wins. `namespace` belongs to the
//! route's access policy (`crate::auth`), which resolves it before the handler runs, so
//! handlers' query types never see it.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};

use crate::error::ApiError;

/// The pairs of a query string, grouped by key in order of first appearance.
#[derive(Debug, Default)]
pub struct Pairs(Vec<(String, Vec<String>)>);

impl Pairs {
    pub fn parse(raw: Option<&str>) -> Pairs {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            match out.iter_mut().find(|(key, _)| *key == k) {
                Some((_, values)) => values.push(v.into_owned()),
                None => out.push((k.into_owned(), vec![v.into_owned()])),
            }
        }
        Pairs(out)
    }

    /// The keys given, each once.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }

    /// Every value given for `key`.
    pub fn all(&self, key: &str) -> &[String] {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map_or(&[], |(_, v)| v.as_slice())
    }

    /// The value of a key that may appear once; a repeat or an empty value is a 400
    /// problem.
    pub fn one(&self, key: &str) -> Result<Option<&str>, ApiError> {
        match self.all(key) {
            [] => Ok(None),
            [v] if v.is_empty() => Err(ApiError::bad_request(format!(
                "query parameter `{key}` must not be empty"
            ))),
            [v] => Ok(Some(v)),
            _ => Err(repeated(key)),
        }
    }

    /// Maps the pairs (but `namespace`) onto `T`.
    pub fn into_typed<T: DeserializeOwned>(self) -> Result<T, ApiError> {
        let pairs = self
            .0
            .into_iter()
            .filter(|(k, _)| k != "namespace")
            .map(|(k, v)| (k.clone(), Values { key: k, values: v }));
        T::deserialize(de::value::MapDeserializer::new(pairs))
            .map_err(|e: QueryError| ApiError::bad_request(format!("query: {}", e.0)))
    }
}

pub fn repeated(key: &str) -> ApiError {
    ApiError::bad_request(format!("query parameter `{key}` may be given only once"))
}

/// A typed query (`?limit=10&label=a=1&label=b=2`): 400 for a malformed value, an unknown
/// choice or a repeated key that is not a list.
pub struct Q<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Pairs::parse(parts.uri.query()).into_typed().map(Q)
    }
}

#[derive(Debug)]
struct QueryError(String);

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for QueryError {}

impl de::Error for QueryError {
    fn custom<M: std::fmt::Display>(msg: M) -> QueryError {
        QueryError(msg.to_string())
    }
}

/// The values of one key: a scalar when the field wants one (exactly one value), a list
/// when it wants a sequence.
struct Values {
    key: String,
    values: Vec<String>,
}

impl Values {
    fn single(self) -> Result<String, QueryError> {
        let key = self.key;
        let mut values = self.values;
        match values.len() {
            1 if values[0].is_empty() => Err(QueryError(format!("`{key}` must not be empty"))),
            1 => Ok(values.remove(0)),
            _ => Err(QueryError(format!("`{key}` may be given only once"))),
        }
    }

    fn parse<N: std::str::FromStr>(self, what: &str) -> Result<N, QueryError> {
        let key = self.key.clone();
        let v = self.single()?;
        v.trim()
            .parse()
            .map_err(|_| QueryError(format!("`{key}`: `{v}` is not {what}")))
    }
}

impl<'de> IntoDeserializer<'de, QueryError> for Values {
    type Deserializer = Values;
    fn into_deserializer(self) -> Values {
        self
    }
}

macro_rules! numbers {
    ($($method:ident $visit:ident $t:ty, $what:literal;)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, QueryError> {
                visitor.$visit(self.parse::<$t>($what)?)
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for Values {
    type Error = QueryError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, QueryError> {
        visitor.visit_string(self.single()?)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, QueryError> {
        visitor.visit_some(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, QueryError> {
        let key = self.key;
        if self.values.iter().any(String::is_empty) {
            return Err(QueryError(format!("`{key}` must not be empty")));
        }
        let items = self.values.into_iter().map(move |v| Values {
            key: key.clone(),
            values: vec![v],
        });
        visitor.visit_seq(de::value::SeqDeserializer::new(items))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, QueryError> {
        visitor.visit_bool(self.parse::<bool>("true or false")?)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, QueryError> {
        visitor.visit_enum(self.single()?.into_deserializer())
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, QueryError> {
        visitor.visit_newtype_struct(self)
    }

    numbers! {
        deserialize_u8 visit_u8 u8, "a whole number from 0 to 255";
        deserialize_u16 visit_u16 u16, "a whole number from 0 to 65535";
        deserialize_u32 visit_u32 u32, "a whole number from 0 to 4294967295";
        deserialize_u64 visit_u64 u64, "a whole number from 0 to 18446744073709551615";
        deserialize_i8 visit_i8 i8, "a small whole number";
        deserialize_i16 visit_i16 i16, "a small whole number";
        deserialize_i32 visit_i32 i32, "a whole number";
        deserialize_i64 visit_i64 i64, "a whole number";
        deserialize_f32 visit_f32 f32, "a number";
        deserialize_f64 visit_f64 f64, "a number";
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf unit unit_struct tuple tuple_struct map
        struct identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct List {
        machine: Option<String>,
        limit: Option<usize>,
        #[serde(default)]
        label: Vec<String>,
        wait: Option<bool>,
    }

    fn parse(q: &str) -> Result<List, String> {
        Pairs::parse(Some(q))
            .into_typed::<List>()
            .map_err(|e| e.detail)
    }

    #[test]
    fn typed_values_lists_and_the_namespace_left_to_the_policy() {
        assert_eq!(
            parse("machine=a%20b&limit=5&label=k%3D1&label=j=2&namespace=x&wait=true&other=1"),
            Ok(List {
                machine: Some("a b".into()),
                limit: Some(5),
                label: vec!["k=1".into(), "j=2".into()],
                wait: Some(true),
            })
        );
        assert_eq!(
            parse(""),
            Ok(List {
                machine: None,
                limit: None,
                label: vec![],
                wait: None
            })
        );
    }

    #[test]
    fn repeats_and_bad_values_are_refused_by_name() {
        let e = parse("machine=a&machine=b").unwrap_err();
        assert!(e.contains("`machine` may be given only once"), "{e}");
        let e = parse("limit=ten").unwrap_err();
        assert!(e.contains("`limit`: `ten` is not"), "{e}");
        let e = parse("limit=-1").unwrap_err();
        assert!(e.contains("`limit`"), "{e}");
        let e = parse("wait=maybe").unwrap_err();
        assert!(e.contains("true or false"), "{e}");
        for q in ["machine=", "label=a%3D1&label="] {
            let e = parse(q).unwrap_err();
            assert!(e.contains("must not be empty"), "{q}: {e}");
        }
        let p = Pairs::parse(Some("namespace=a&namespace=%61"));
        assert!(p.one("namespace").is_err());
    }
}
