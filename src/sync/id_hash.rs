//! The tables' hasher: a keyed fold of 128-bit ids.

/// The hasher of the actor and channel tables and of shard selection, whose keys
/// are 128-bit ids ([`Participant`](crate::Participant) and
/// [`ChannelId`](crate::ChannelId)): one keyed 64×64→128-bit multiply folds the
/// id's two halves, where a general-purpose hasher runs its full rounds over
/// every byte.
///
/// The ids are random: actor and external ids are version 4 UUIDs (122 random
/// bits; an actor id is chosen by the program that registers it, external ids
/// by the router), channel ids are 128 random bits from the router. So a hash
/// only has to spread bits that are already uniform. Against ids chosen to
/// collide, each instance is keyed by two 64-bit words drawn from
/// [`random_state`](super::random_state)'s per-process key: without the keys,
/// which never leave the process, colliding ids cannot be computed from the
/// outside (no remote client chooses a table key: the gateway's sessions get
/// router-made ids). It is not a cryptographic hash; a program that registers
/// ids from an untrusted source should make them with
/// [`ActorId::new`](crate::ActorId::new).
#[derive(Clone)]
pub(crate) struct IdHashState {
    k0: u64,
    k1: u64,
}

impl IdHashState {
    /// A freshly keyed instance (fixed under loom, see
    /// [`random_state`](super::random_state)).
    pub(crate) fn new() -> Self {
        // `ahash::RandomState` keeps its seeds private: derive two words from it.
        let seeds = super::random_state();
        Self {
            k0: seeds.hash_one(0x243f_6a88_85a3_08d3_u64) | 1,
            k1: seeds.hash_one(0x1319_8a2e_0370_7344_u64),
        }
    }

    /// The hash of `value`.
    pub(crate) fn hash_one<T: std::hash::Hash>(&self, value: T) -> u64 {
        std::hash::BuildHasher::hash_one(self, value)
    }
}

impl std::hash::BuildHasher for IdHashState {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher { k0: self.k0, k1: self.k1, acc: 0 }
    }
}

/// See [`IdHashState`]. Short writes (an enum's discriminant, a length prefix)
/// are mixed in with a rotate and an add; 16 bytes (an id) and longer writes go
/// through the folded multiply, 16 bytes at a time.
pub(crate) struct IdHasher {
    k0: u64,
    k1: u64,
    acc: u64,
}

impl IdHasher {
    /// Both halves of the 128-bit product of `a` and `b`, folded into 64 bits.
    fn fold(a: u64, b: u64) -> u64 {
        let product = u128::from(a) * u128::from(b);
        (product as u64) ^ ((product >> 64) as u64)
    }

    /// Mixes 16 bytes, as two little-endian words, into the state.
    fn absorb(&mut self, lo: u64, hi: u64) {
        self.acc = Self::fold(lo ^ self.k0 ^ self.acc, hi ^ self.k1);
    }

    fn word(bytes: &[u8]) -> u64 {
        let mut word = [0u8; 8];
        word[..bytes.len()].copy_from_slice(bytes);
        u64::from_le_bytes(word)
    }
}

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(16) {
            let (lo, hi) = chunk.split_at(chunk.len().min(8));
            self.absorb(Self::word(lo), Self::word(hi));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.acc = self.acc.rotate_left(23).wrapping_add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }

    /// A channel id: the same fold as [`write`](Self::write) of its
    /// little-endian bytes, without the byte loop (std's default goes through
    /// it, about 80 instructions a lookup).
    fn write_u128(&mut self, i: u128) {
        self.absorb(i as u64, (i >> 64) as u64);
    }

    fn finish(&self) -> u64 {
        self.acc
    }
}

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, Hasher};

    use super::IdHashState;

    #[test]
    fn a_u128_hashes_as_its_little_endian_bytes_do() {
        let state = IdHashState::new();
        for bits in [0, 1, u128::MAX, 0x8000_0000_0000_0002_4000_0000_0000_0001, 1 << 64] {
            let mut whole = state.build_hasher();
            whole.write_u64(7);
            whole.write_u128(bits);
            let mut bytes = state.build_hasher();
            bytes.write_u64(7);
            bytes.write(&bits.to_le_bytes());
            assert_eq!(whole.finish(), bytes.finish(), "{bits:#x}");
        }
        // And the halves are not interchangeable.
        assert_ne!(state.hash_one(1_u128), state.hash_one(1_u128 << 64));
    }
}
