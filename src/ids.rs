//! Identifiers: actors, external clients, channels.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// The error returned when parsing an identifier fails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseIdError {
    kind: &'static str,
}

impl fmt::Display for ParseIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {} (expected a UUID such as 67e55044-10b1-426f-9247-bb680e5fe0c8)", self.kind)
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
                Uuid::parse_str(s).map(Self).map_err(|_| ParseIdError { kind: $what })
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
