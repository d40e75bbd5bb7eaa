//! Audit events as the API server's webhook backend sends them, and decoding of request bodies.
//!
//! Only the fields the line format and the filters need are typed; the event's original JSON is
//! kept verbatim so that `--json` output loses nothing the API server sent.

use serde::Deserialize;
use serde_json::value::RawValue;

/// The `audit.k8s.io` versions Falco accepts; v1beta1 was removed in Kubernetes 1.24 but older
/// clusters still send it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    V1,
    V1Beta1,
}

impl ApiVersion {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "audit.k8s.io/v1" => Some(Self::V1),
            "audit.k8s.io/v1beta1" => Some(Self::V1Beta1),
            _ => None,
        }
    }
}

/// The point in the request's life at which the API server emitted the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Stage {
    RequestReceived,
    ResponseStarted,
    ResponseComplete,
    Panic,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::RequestReceived => "RequestReceived",
            Stage::ResponseStarted => "ResponseStarted",
            Stage::ResponseComplete => "ResponseComplete",
            Stage::Panic => "Panic",
        }
    }
}

/// How much of the request the policy asked the API server to record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Level {
    None,
    Metadata,
    Request,
    RequestResponse,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct User {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// What the request was about; absent for non-resource URLs such as `/version`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    pub resource: Option<String>,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub api_group: Option<String>,
    pub api_version: Option<String>,
}

/// One audit event: the typed fields plus the JSON it came from.
#[derive(Debug, Clone)]
pub struct Event {
    pub api_version: ApiVersion,
    pub audit_id: String,
    pub stage: Stage,
    pub level: Level,
    pub verb: String,
    pub request_uri: String,
    pub user: User,
    pub object_ref: Option<ObjectRef>,
    /// The HTTP status the API server answered, once a response exists.
    pub response_code: Option<u16>,
    raw: Box<RawValue>,
}

impl Event {
    /// The event's JSON exactly as it was received (one line: the API server sends compact JSON,
    /// and pretty input is compacted by the receiver).
    pub fn raw_json(&self) -> &str {
        self.raw.get()
    }

    /// `pods`, `pods/log`, or `None` for non-resource requests.
    pub fn resource(&self) -> Option<String> {
        let object = self.object_ref.as_ref()?;
        let resource = object.resource.as_deref()?;
        Some(match object.subresource.as_deref() {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource.to_owned(),
        })
    }

    pub fn namespace(&self) -> Option<&str> {
        self.object_ref.as_ref()?.namespace.as_deref()
    }

    pub fn name(&self) -> Option<&str> {
        self.object_ref.as_ref()?.name.as_deref()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireEvent {
    #[serde(rename = "auditID")]
    audit_id: String,
    stage: Stage,
    level: Level,
    verb: String,
    #[serde(rename = "requestURI")]
    request_uri: String,
    #[serde(default)]
    user: User,
    object_ref: Option<ObjectRef>,
    response_status: Option<WireStatus>,
}

#[derive(Deserialize)]
struct WireStatus {
    code: Option<u16>,
}

/// The outer object, read in one pass: the members stay unparsed slices of the body, so that
/// each can be checked with a message of its own.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    #[serde(borrow)]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    api_version: Option<&'a RawValue>,
    /// Go encodes an empty slice as `null`.
    #[serde(borrow)]
    items: Option<&'a RawValue>,
}

/// Why a request body is not an audit event batch; the text is what the client gets with the 400.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("body is not UTF-8 (invalid byte at offset {offset})")]
    NotUtf8 { offset: usize },
    #[error("empty body: expected an audit EventList or Event as a JSON object")]
    Empty,
    #[error("expected a JSON object (an audit EventList or Event) or an array of them")]
    NotObject,
    /// An array element that is not an object; arrays do not nest.
    #[error("expected a JSON object (an audit EventList or Event)")]
    NotObjectInArray,
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("invalid Event at line {line}, column {column}: {message}")]
    Event {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("missing \"kind\": expected \"EventList\" or \"Event\"")]
    MissingKind,
    /// `found` is the JSON text of the value, e.g. `"Pod"` or `0`.
    #[error("unsupported kind {found}: expected \"EventList\" or \"Event\"")]
    Kind { found: String },
    /// `found` is the JSON text of the value. An absent apiVersion means v1, as Falco reads it.
    #[error(
        "unsupported apiVersion {found}: expected \"audit.k8s.io/v1\" or \"audit.k8s.io/v1beta1\""
    )]
    ApiVersion { found: String },
    #[error("element {index} of the array: {error}")]
    Element {
        index: usize,
        error: Box<DecodeError>,
    },
    #[error("\"items\" is {found}: expected an array of audit events")]
    Items { found: String },
    #[error("items[{index}] at line {line}, column {column}: {message}")]
    Item {
        index: usize,
        line: usize,
        column: usize,
        message: String,
    },
}

/// Decodes an `EventList` or a single `Event` of `audit.k8s.io/v1` or `v1beta1`, or a JSON
/// array of them, as Falco's k8saudit plugin reads them.
pub fn decode(body: &[u8]) -> Result<Vec<Event>, DecodeError> {
    let text = std::str::from_utf8(body).map_err(|e| DecodeError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    match text.trim_start().as_bytes().first() {
        None => Err(DecodeError::Empty),
        Some(b'{') => decode_object(text, text),
        // One level only: Falco nests further, but each level would parse the body again.
        Some(b'[') => {
            let elements: Vec<&RawValue> =
                serde_json::from_str(text).map_err(|e| json_error(text, text, &e))?;
            let mut events = Vec::new();
            for (index, element) in elements.into_iter().enumerate() {
                let found = match element.get().as_bytes().first() {
                    Some(b'{') => decode_object(text, element.get()),
                    _ => Err(DecodeError::NotObjectInArray),
                };
                events.extend(found.map_err(|error| DecodeError::Element {
                    index,
                    error: Box::new(error),
                })?);
            }
            Ok(events)
        }
        Some(_) => Err(DecodeError::NotObject),
    }
}

/// Decodes one object, `object` being a slice of `body` (all of it, or an array element), so
/// that positions are reported in the body.
fn decode_object(body: &str, object: &str) -> Result<Vec<Event>, DecodeError> {
    let text = object;
    let head: Envelope = serde_json::from_str(text).map_err(|e| json_error(body, text, &e))?;
    let kind = match head
        .kind
        .map(|k| (k, serde_json::from_str::<String>(k.get())))
    {
        None => return Err(DecodeError::MissingKind),
        Some((_, Ok(kind))) => kind,
        Some((raw, Err(_))) => {
            return Err(DecodeError::Kind {
                found: raw.get().to_owned(),
            });
        }
    };
    // Falco ignores apiVersion, and its own test events carry none.
    let api_version = match head.api_version {
        None => ApiVersion::V1,
        Some(raw) => serde_json::from_str::<String>(raw.get())
            .ok()
            .as_deref()
            .and_then(ApiVersion::parse)
            .ok_or_else(|| DecodeError::ApiVersion {
                found: raw.get().to_owned(),
            })?,
    };
    match kind.as_str() {
        "EventList" => {
            let items: Vec<&RawValue> = match head.items {
                None => Vec::new(),
                Some(raw) => serde_json::from_str::<Option<Vec<&RawValue>>>(raw.get())
                    .map_err(|_| DecodeError::Items {
                        found: json_type(raw),
                    })?
                    .unwrap_or_default(),
            };
            items
                .into_iter()
                .enumerate()
                .map(|(index, item)| {
                    event(api_version, item).map_err(|e| {
                        let (line, column) = absolute_position(body, item.get(), &e);
                        DecodeError::Item {
                            index,
                            line,
                            column,
                            message: message_of(&e),
                        }
                    })
                })
                .collect()
        }
        "Event" => {
            let raw: &RawValue =
                serde_json::from_str(text).map_err(|e| json_error(body, text, &e))?;
            let event = event(api_version, raw).map_err(|e| {
                let (line, column) = absolute_position(body, text, &e);
                DecodeError::Event {
                    line,
                    column,
                    message: message_of(&e),
                }
            })?;
            Ok(vec![event])
        }
        _ => Err(DecodeError::Kind {
            found: head.kind.map(|k| k.get().to_owned()).unwrap_or_default(),
        }),
    }
}

/// What a JSON value is, for a message ("a string", "an object", ...).
fn json_type(raw: &RawValue) -> String {
    match raw.get().trim_start().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
    .to_owned()
}

fn event(api_version: ApiVersion, raw: &RawValue) -> Result<Event, serde_json::Error> {
    let wire: WireEvent = serde_json::from_str(raw.get())?;
    Ok(Event {
        api_version,
        audit_id: wire.audit_id,
        stage: wire.stage,
        level: wire.level,
        verb: wire.verb,
        request_uri: wire.request_uri,
        user: wire.user,
        object_ref: wire.object_ref,
        response_code: wire.response_status.and_then(|s| s.code),
        raw: compact(raw)?,
    })
}

/// Pretty-printed input must not break the one-event-per-line output.
fn compact(raw: &RawValue) -> Result<Box<RawValue>, serde_json::Error> {
    if raw.get().contains('\n') {
        let value: serde_json::Value = serde_json::from_str(raw.get())?;
        RawValue::from_string(value.to_string())
    } else {
        Ok(raw.to_owned())
    }
}

/// An error in `part`, a slice of `body`, with its position in `body`.
fn json_error(body: &str, part: &str, e: &serde_json::Error) -> DecodeError {
    let (line, column) = absolute_position(body, part, e);
    DecodeError::Json {
        line,
        column,
        message: message_of(e),
    }
}

/// serde_json appends " at line L column C" to its messages; the position is reported separately.
fn message_of(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(cut) => text[..cut].to_owned(),
        None => text,
    }
}

/// Translates an error position inside `item` (a slice of `body`) into a body position.
fn absolute_position(body: &str, item: &str, e: &serde_json::Error) -> (usize, usize) {
    let start = (item.as_ptr() as usize)
        .saturating_sub(body.as_ptr() as usize)
        .min(body.len());
    let before = body.get(..start).unwrap_or("");
    let start_line = before.matches('\n').count() + 1;
    let start_column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    if e.line() <= 1 {
        (start_line, start_column + e.column().saturating_sub(1))
    } else {
        (start_line + e.line() - 1, e.column())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ITEM: &str = r#"{"level":"Request","auditID":"a","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/d/configmaps","verb":"create","user":{"username":"admin"},"objectRef":{"resource":"configmaps","namespace":"d","name":"c"},"responseStatus":{"code":201}}"#;

    #[test]
    fn decodes_typed_fields() {
        let body =
            format!(r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{ITEM}]}}"#);
        let events = decode(body.as_bytes()).expect("valid list");
        let e = &events[0];
        assert_eq!(
            (e.api_version, e.stage, e.level),
            (ApiVersion::V1, Stage::ResponseComplete, Level::Request)
        );
        assert_eq!(
            (e.verb.as_str(), e.user.username.as_str(), e.response_code),
            ("create", "admin", Some(201))
        );
        assert_eq!(
            (e.resource().as_deref(), e.namespace(), e.name()),
            (Some("configmaps"), Some("d"), Some("c"))
        );
        assert_eq!(e.raw_json(), ITEM);
    }

    #[test]
    fn an_empty_list_is_fine() {
        let events =
            decode(br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1beta1","items":null}"#);
        assert!(events.expect("null items decode").is_empty());
    }

    #[test]
    fn item_errors_point_into_the_body() {
        let bad = ITEM.replace(r#""verb":"create","#, "");
        let body = format!(
            "{{\"kind\":\"EventList\",\"apiVersion\":\"audit.k8s.io/v1\",\n\"items\":[{ITEM},\n  {bad}]}}"
        );
        match decode(body.as_bytes()) {
            Err(DecodeError::Item {
                index,
                line,
                column,
                message,
            }) => {
                assert_eq!((index, line), (1, 3));
                assert_eq!(message, "missing field `verb`");
                // serde reports a missing field at the item's closing brace, which sits at
                // column 2 + len because the item starts at column 3.
                assert_eq!(column, 2 + bad.len());
            }
            other => panic!("expected an item error, got {other:?}"),
        }
    }

    #[test]
    fn errors_in_an_array_element_point_into_the_body() {
        let bad = ITEM.replace(r#""verb":"create","#, "");
        let open = r#"{"kind":"EventList","items":["#;
        let body = format!("[\n{open}{ITEM}]}},\n  {open}{bad}]}}]");
        match decode(body.as_bytes()) {
            Err(DecodeError::Element { index: 1, error }) => match *error {
                DecodeError::Item {
                    index: 0,
                    line,
                    column,
                    ..
                } => assert_eq!((line, column), (3, 2 + open.len() + bad.len())),
                other => panic!("expected an item error, got {other:?}"),
            },
            other => panic!("expected an element error, got {other:?}"),
        }
    }

    #[test]
    fn pretty_items_are_compacted_for_json_lines() {
        let pretty = serde_json::to_string_pretty(
            &serde_json::from_str::<serde_json::Value>(ITEM).expect("json"),
        )
        .expect("pretty");
        let body =
            format!(r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{pretty}]}}"#);
        let events = decode(body.as_bytes()).expect("valid list");
        assert!(!events[0].raw_json().contains('\n'));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&body);
        }

        #[test]
        fn truncated_or_corrupted_lists_never_panic(cut in 0usize..400, at in 0usize..400, byte in any::<u8>()) {
            let mut body = format!(r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{ITEM},{ITEM}]}}"#).into_bytes();
            if let Some(b) = body.get_mut(at) { *b = byte; }
            body.truncate(body.len().saturating_sub(cut));
            let _ = decode(&body);
        }
    }
}
