//! The fixed routing hash: affinity keys, member hashes and rendezvous scores.
//!
//! Everything here is a product guarantee (SPEC section 5): every mxgate node,
//! in any process, on any version, must compute the same bytes, the same
//! hashes and the same scores, so that nodes agree on a client's member
//! without talking to each other. The encoding is specified in
//! `docs/routing.md` and pinned by test vectors in `tests.rs`; changing
//! anything in this file is a breaking change of the product.
//!
//! Flow: [`AffinityKey::new`] turns (client, destination, policy) into a short
//! byte string; [`member_hash`] hashes it with each member name (XXH3-64,
//! seed 0); [`rendezvous_score`] turns hash and weight into the weighted
//! rendezvous score; [`rank_cmp`] orders by score, then by name.

use std::cmp::Ordering;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Serialize;
use xxhash_rust::xxh3::Xxh3Default;

use crate::config::{Affinity, RoutingPolicy};

/// Family tag of an IPv4 address in a key (followed by 4 bytes).
pub const TAG_V4: u8 = 0x04;
/// Family tag of an IPv6 address in a key (followed by 16 bytes).
pub const TAG_V6: u8 = 0x06;
/// Marker for "no destination address" in a `source-destination` key.
pub const TAG_NO_DEST: u8 = 0x00;
/// Separator between the key and the member name in the hash input. 0xFF
/// never occurs in UTF-8, so it cannot be confused with a name byte.
pub const SEPARATOR: u8 = 0xFF;

/// Longest key: tag + IPv6 client, tag + IPv6 destination.
const MAX_KEY: usize = 2 * (1 + 16);

/// The bytes a session is hashed by (see `docs/routing.md`).
///
/// Fixed-size and stack-allocated: building one costs no allocation.
/// Serializes (and displays) as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AffinityKey {
    buf: [u8; MAX_KEY],
    len: u8,
}

impl AffinityKey {
    /// The key of a session from `client` to `dest` under `routing`.
    ///
    /// `source-destination`: masked client, then the destination (or the
    /// no-destination marker). `source`: the masked client only. `none`: as
    /// `source-destination`; the key only breaks ties between equally loaded
    /// members. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) count as IPv4.
    pub fn new(routing: &RoutingPolicy, client: IpAddr, dest: Option<IpAddr>) -> Self {
        let mut key = AffinityKey {
            buf: [0; MAX_KEY],
            len: 0,
        };
        key.push_addr(client_prefix(routing, client).addr());
        if routing.affinity != Affinity::Source {
            match dest {
                Some(d) => key.push_addr(d.to_canonical()),
                None => key.push(&[TAG_NO_DEST]),
            }
        }
        key
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    fn push_addr(&mut self, addr: IpAddr) {
        match addr {
            IpAddr::V4(a) => {
                self.push(&[TAG_V4]);
                self.push(&a.octets());
            }
            IpAddr::V6(a) => {
                self.push(&[TAG_V6]);
                self.push(&a.octets());
            }
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        // Callers push at most MAX_KEY bytes in total (two tagged addresses).
        let start = usize::from(self.len);
        self.buf[start..start + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len() as u8;
    }
}

impl fmt::Display for AffinityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for AffinityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AffinityKey({self})")
    }
}

impl Serialize for AffinityKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The client's group: its canonical address masked to `client_prefix_v4` or
/// `client_prefix_v6` (prefixes beyond the address length count as full).
pub fn client_prefix(routing: &RoutingPolicy, client: IpAddr) -> IpNet {
    match client.to_canonical() {
        IpAddr::V4(a) => {
            let len = routing.client_prefix_v4.min(32);
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            let masked = Ipv4Addr::from_bits(a.to_bits() & mask);
            IpNet::V4(Ipv4Net::new_assert(masked, len))
        }
        IpAddr::V6(a) => {
            let len = routing.client_prefix_v6.min(128);
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            let masked = Ipv6Addr::from_bits(a.to_bits() & mask);
            IpNet::V6(Ipv6Net::new_assert(masked, len))
        }
    }
}

/// The fixed hash of an affinity key and a member name (XXH3-64, seed 0).
///
/// Input bytes: `key`, then [`SEPARATOR`], then the UTF-8 bytes of `member`.
pub fn member_hash(key: &[u8], member: &str) -> u64 {
    // Streaming XXH3 with the default secret equals the one-shot function over
    // the concatenation, without building the concatenation on the heap.
    let mut h = Xxh3Default::new();
    h.update(key);
    h.update(&[SEPARATOR]);
    h.update(member.as_bytes());
    h.digest()
}

/// `u` of the rendezvous formula: the hash's top 53 bits as a number strictly
/// inside (0, 1), exactly: `n / 2^53` with `n = hash >> 11`, and `n = 0`
/// replaced by `1/2` so that `u` is never 0.
pub fn unit_interval(hash: u64) -> f64 {
    const TWO_POW_MINUS_53: f64 = 1.0 / 9_007_199_254_740_992.0;
    let n = hash >> 11;
    // n < 2^53 converts to f64 exactly; scaling by a power of two is exact.
    let n = if n == 0 { 0.5 } else { n as f64 };
    n * TWO_POW_MINUS_53
}

/// Weighted rendezvous score of a member for a key: higher wins.
///
/// `weight / -ln(u)` with `u` from [`unit_interval`]; the logarithm is
/// [`fixed_ln`], which uses IEEE-754 basic operations only, so the score does
/// not depend on the platform's math library. Weight 0 scores 0.
pub fn rendezvous_score(hash: u64, weight: u32) -> f64 {
    f64::from(weight) / -fixed_ln(unit_interval(hash))
}

/// Routing order of two (name, score) pairs: score descending, then name
/// ascending (byte order), so the order is total and never depends on input order.
pub fn rank_cmp(a_name: &str, a_score: f64, b_name: &str, b_score: f64) -> Ordering {
    b_score
        .total_cmp(&a_score)
        .then_with(|| a_name.as_bytes().cmp(b_name.as_bytes()))
}

/// Natural logarithm of a positive normal `x`, bit-for-bit reproducible.
///
/// A port of fdlibm's `__ieee754_log` (Sun Microsystems, 1993; freely
/// usable), error below 1 ulp. It uses only `+ - * /` and bit manipulation,
/// which IEEE-754 defines exactly and Rust never contracts into FMA, so every
/// platform computes the same bits. Zero, negative, subnormal, infinite and
/// NaN inputs never reach it from [`rendezvous_score`] (`u` lies in
/// [2^-54, 1 - 2^-53]); they give NaN here rather than fdlibm's special values.
pub fn fixed_ln(x: f64) -> f64 {
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
    const LG1: f64 = f64::from_bits(0x3fe5_5555_5555_5593);
    const LG2: f64 = f64::from_bits(0x3fd9_9999_9997_fa04);
    const LG3: f64 = f64::from_bits(0x3fd2_4924_9422_9359);
    const LG4: f64 = f64::from_bits(0x3fcc_71c5_1d8e_78af);
    const LG5: f64 = f64::from_bits(0x3fc7_4664_96cb_03de);
    const LG6: f64 = f64::from_bits(0x3fc3_9a09_d078_c69f);
    const LG7: f64 = f64::from_bits(0x3fc2_f112_df3e_5244);
    /// fdlibm writes `0.33333333333333333`, which parses to exactly this.
    const ONE_THIRD: f64 = f64::from_bits(0x3fd5_5555_5555_5555);

    if !(x.is_normal() && x > 0.0) {
        return f64::NAN;
    }
    let bits = x.to_bits();
    let hx = (bits >> 32) as i32;
    let lx = bits & 0xffff_ffff;
    let mut k = (hx >> 20) - 1023;
    let hx = hx & 0x000f_ffff;
    let i = (hx + 0x95f64) & 0x10_0000;
    // Normalize x or x/2 into [sqrt(2)/2, sqrt(2)).
    let high = (hx | (i ^ 0x3ff0_0000)) as u64;
    let x = f64::from_bits((high << 32) | lx);
    k += i >> 20;
    let f = x - 1.0;
    let dk = f64::from(k);
    if (0x000f_ffff & (2 + hx)) < 3 {
        // -2^-20 <= f < 2^-20
        if f == 0.0 {
            return if k == 0 {
                0.0
            } else {
                dk * LN2_HI + dk * LN2_LO
            };
        }
        let r = f * f * (0.5 - ONE_THIRD * f);
        return if k == 0 {
            f - r
        } else {
            dk * LN2_HI - ((r - dk * LN2_LO) - f)
        };
    }
    let s = f / (2.0 + f);
    let z = s * s;
    let w = z * z;
    let t1 = w * (LG2 + w * (LG4 + w * LG6));
    let t2 = z * (LG1 + w * (LG3 + w * (LG5 + w * LG7)));
    let r = t2 + t1;
    if ((hx - 0x6147a) | (0x6b851 - hx)) > 0 {
        let hfsq = 0.5 * f * f;
        if k == 0 {
            f - (hfsq - s * (hfsq + r))
        } else {
            dk * LN2_HI - ((hfsq - (s * (hfsq + r) + dk * LN2_LO)) - f)
        }
    } else if k == 0 {
        f - s * (f - r)
    } else {
        dk * LN2_HI - ((s * (f - r) - dk * LN2_LO) - f)
    }
}
