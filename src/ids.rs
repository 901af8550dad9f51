//! Identifiers: actors, external clients, channels.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// The error returned when parsing an identifier fails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseIdError {
    kind: &'static str,
    expected: &'static str,
}

impl fmt::Display for ParseIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {} (expected {})", self.kind, self.expected)
    }
}

impl std::error::Error for ParseIdError {}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh random (version 4) identifier.
            #[must_use]
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }

            /// Wraps an existing UUID.
            #[must_use]
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The underlying UUID.
            #[must_use]
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0.hyphenated())
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self).map_err(|_| ParseIdError { kind: $what, expected: "a UUID" })
            }
        }
    };
}

uuid_id!(
    /// Identifies an actor. A random version-4 UUID.
    ///
    /// ```
    /// use sharded_router::ActorId;
    /// let id = ActorId::new();
    /// let parsed: ActorId = id.to_string().parse().unwrap();
    /// assert_eq!(id, parsed);
    /// assert!("not-an-id".parse::<ActorId>().is_err());
    /// ```
    ActorId,
    "actor id"
);
uuid_id!(
    /// Identifies an external client (for example a management-gateway session)
    /// that holds an endpoint on the router. Every client has its own.
    ExternalId,
    "external id"
);

/// Identifies a channel: 128 random bits, so ids cannot be guessed.
///
/// Displayed as 32 lowercase hex digits.
///
/// ```
/// use sharded_router::ChannelId;
/// let id = ChannelId::random();
/// assert_eq!(id.to_string().len(), 32);
/// assert_eq!(id.to_string().parse::<ChannelId>().unwrap(), id);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(u128);

impl ChannelId {
    /// A fresh id from the operating system's random source.
    #[must_use]
    pub fn random() -> Self {
        // Two v4 UUIDs from the operating system's source, 122 random bits each. Their
        // fixed version and variant bits (bits 76..80 and 62..64) land, after the
        // rotation, on bits 12..16 and 126..128, so every bit of the result is the
        // exclusive or of at least one random bit: 128 uniformly random bits.
        Self(Uuid::new_v4().as_u128().rotate_left(64) ^ Uuid::new_v4().as_u128())
    }

    /// The id's 128 bits.
    #[must_use]
    pub const fn as_u128(&self) -> u128 {
        self.0
    }

    /// An id with the given bits (for tests and wire formats).
    #[must_use]
    pub const fn from_u128(bits: u128) -> Self {
        Self(bits)
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelId({:032x})", self.0)
    }
}

impl FromStr for ChannelId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = ParseIdError { kind: "channel id", expected: "32 hex digits" };
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err);
        }
        u128::from_str_radix(s, 16).map(Self).map_err(|_| err)
    }
}

/// One end of a channel: an actor, or an external client.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Participant {
    /// A registered actor.
    Actor(ActorId),
    /// An external client's endpoint.
    External(ExternalId),
}

impl From<ActorId> for Participant {
    fn from(id: ActorId) -> Self {
        Self::Actor(id)
    }
}

impl From<ExternalId> for Participant {
    fn from(id: ExternalId) -> Self {
        Self::External(id)
    }
}

impl fmt::Display for Participant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Actor(id) => write!(f, "actor {id}"),
            Self::External(id) => write!(f, "external {id}"),
        }
    }
}

impl fmt::Debug for Participant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Actor(id) => fmt::Debug::fmt(id, f),
            Self::External(id) => fmt::Debug::fmt(id, f),
        }
    }
}
