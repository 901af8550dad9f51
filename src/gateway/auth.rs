//! Token authentication for the gateway server.
//!
//! A server given a [`TokenSet`] admits a connection only once its first frame is
//! `Authenticate { token }` with one of the set's tokens. Several tokens may be
//! valid at once, so a token can be rotated without a moment when no token
//! works: add the new one, move the clients over, remove the old one.
//!
//! The set keeps only the SHA-256 digest of each token. A presented token is
//! hashed, and its digest is compared with every digest in the set in constant
//! time (`subtle`), with no early exit: how long a check takes tells nothing of
//! how much of a token was right, nor which token matched. The tokens themselves
//! are never logged; a set's `Debug` form shows only how many it holds.

use std::fmt;
use std::io;
use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

/// The tokens a server accepts.
///
/// ```
/// use sharded_router::gateway::TokenSet;
/// let tokens = TokenSet::parse("# rotated on Monday\nold-secret\nnew-secret\n").unwrap();
/// assert_eq!(tokens.len(), 2);
/// assert!(tokens.verify("new-secret"));
/// assert!(tokens.verify("old-secret"));
/// assert!(!tokens.verify("new-secre"));
/// assert_eq!(format!("{tokens:?}"), "TokenSet { tokens: 2 }");
/// ```
#[derive(Clone)]
pub struct TokenSet {
    digests: Vec<[u8; 32]>,
}

impl TokenSet {
    /// A set of the given tokens. Tokens are used exactly as given (no trimming).
    ///
    /// # Errors
    /// `InvalidInput` if there is no token, or a token is empty.
    pub fn new<I, T>(tokens: I) -> io::Result<Self>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        let mut digests = Vec::new();
        for token in tokens {
            let token = token.as_ref();
            if token.is_empty() {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "an empty token is not allowed"));
            }
            digests.push(digest(token));
        }
        if digests.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no token given"));
        }
        Ok(Self { digests })
    }

    /// Reads a token file's text: one token per line; surrounding whitespace is
    /// ignored, and so are empty lines and lines starting with `#`.
    ///
    /// # Errors
    /// `InvalidInput` if the text holds no token.
    pub fn parse(text: &str) -> io::Result<Self> {
        Self::new(token_lines(text)).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the token file holds no token (one token per line; '#' starts a comment line)",
            )
        })
    }

    /// Reads a token file (see [`parse`](Self::parse)).
    ///
    /// # Errors
    /// The read error, or `InvalidInput` if the file holds no token. The messages
    /// name the file, never its contents.
    pub fn from_file(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot read token file {}: {e}", path.display()))
        })?;
        Self::parse(&text).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    }

    /// How many tokens the set holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Always `false`: a set holds at least one token.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `presented` is one of the set's tokens, in time that depends only
    /// on the number of tokens in the set and the length of `presented`.
    #[must_use]
    pub fn verify(&self, presented: &str) -> bool {
        let presented = digest(presented);
        let mut matched = Choice::from(0);
        for known in &self.digests {
            matched |= known.ct_eq(&presented);
        }
        matched.into()
    }
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSet").field("tokens", &self.digests.len()).finish()
    }
}

/// The first token of a token file's text, for clients (see [`TokenSet::parse`]
/// for the format): a client presents one token, the first it finds.
///
/// ```
/// use sharded_router::gateway::first_token;
/// assert_eq!(first_token("# ours\n\n  abc \nxyz\n").map(|t| t.expose().to_owned()), Some("abc".into()));
/// assert!(first_token("# none\n").is_none());
/// ```
#[must_use]
pub fn first_token(text: &str) -> Option<super::protocol::Token> {
    token_lines(text).next().map(super::protocol::Token::new)
}

fn token_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#'))
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_sets_and_tokens_are_refused() {
        assert!(TokenSet::new(Vec::<String>::new()).is_err());
        assert!(TokenSet::new([""]).is_err());
        assert!(TokenSet::parse("\n# only a comment\n   \n").is_err());
    }

    #[test]
    fn only_listed_tokens_verify() {
        let set = TokenSet::new(["alpha", "beta"]).unwrap();
        assert!(set.verify("alpha") && set.verify("beta"));
        for wrong in ["", "alph", "alphaa", "ALPHA", "gamma", " beta"] {
            assert!(!set.verify(wrong), "{wrong:?}");
        }
    }

    #[test]
    fn a_missing_file_is_reported_without_contents() {
        let err = TokenSet::from_file("/nonexistent/token-file").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("/nonexistent/token-file"));
    }
}
