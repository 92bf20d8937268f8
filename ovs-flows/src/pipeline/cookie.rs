//! Flow cookies: every flow Weft installs carries its restart round, a category and an object
//! id, so stale rounds, one category or one pod's flows can be deleted by cookie mask.
//!
//! ```text
//!  63            48 47      40 39                                        0
//! +----------------+----------+-------------------------------------------+
//! |  round (16)    | cat. (8) |  object id (40): pod ofport, 0 otherwise  |
//! +----------------+----------+-------------------------------------------+
//! ```
//! E.g. `cookie=0x3030000000005` is round 3, category 3 ([`Category::Pod`]), the pod on
//! OpenFlow port 5.

use crate::ofp::FlowMod;

/// Bit offset of the round.
pub const ROUND_SHIFT: u32 = 48;
/// Bit offset of the category.
pub const CATEGORY_SHIFT: u32 = 40;
/// Mask of the round bits.
pub const ROUND_MASK: u64 = 0xffff << ROUND_SHIFT;
/// Mask of the category bits.
pub const CATEGORY_MASK: u64 = 0xff << CATEGORY_SHIFT;
/// Mask of the object id bits.
pub const OBJECT_MASK: u64 = (1 << CATEGORY_SHIFT) - 1;

/// What a flow belongs to. 0 is never used, so a Weft cookie is never 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    /// Table-miss and other flows every node has, whatever its configuration.
    Pipeline = 1,
    /// Flows of the host gateway port and the gateway IPs.
    Gateway = 2,
    /// Flows of one local pod (object id = its OpenFlow port).
    Pod = 3,
    /// Flows to one peer node (issue 4).
    Peer = 4,
    /// Flows of the tunnel port (issue 4).
    Tunnel = 5,
    /// Flows of the uplink port (issue 4).
    Uplink = 6,
    /// Service load-balancing flows (later wave).
    Service = 7,
    /// NetworkPolicy flows (later wave).
    Policy = 8,
}

impl Category {
    /// Every category.
    pub const ALL: [Category; 8] = [
        Category::Pipeline,
        Category::Gateway,
        Category::Pod,
        Category::Peer,
        Category::Tunnel,
        Category::Uplink,
        Category::Service,
        Category::Policy,
    ];

    /// The category stored in a cookie, if valid.
    pub fn from_bits(bits: u8) -> Option<Category> {
        Category::ALL.into_iter().find(|c| *c as u8 == bits)
    }
}

/// A decoded Weft cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cookie {
    /// Agent restart round (wraps at 2^16).
    pub round: u16,
    /// What the flow belongs to.
    pub category: Category,
    /// Object id within the category (pod: OpenFlow port); only the low 40 bits are kept.
    pub object: u64,
}

impl Cookie {
    /// A cookie for `category` with no object.
    pub fn new(round: u16, category: Category) -> Self {
        Cookie {
            round,
            category,
            object: 0,
        }
    }

    /// The same cookie for one object.
    pub fn with_object(mut self, object: u64) -> Self {
        self.object = object & OBJECT_MASK;
        self
    }

    /// The 64-bit value put on flows.
    pub fn to_u64(self) -> u64 {
        (u64::from(self.round) << ROUND_SHIFT)
            | ((self.category as u64) << CATEGORY_SHIFT)
            | (self.object & OBJECT_MASK)
    }

    /// Decodes a cookie; `None` if its category is not one of Weft's (e.g. a foreign flow).
    pub fn from_u64(cookie: u64) -> Option<Cookie> {
        let category = Category::from_bits(((cookie & CATEGORY_MASK) >> CATEGORY_SHIFT) as u8)?;
        Some(Cookie {
            round: (cookie >> ROUND_SHIFT) as u16,
            category,
            object: cookie & OBJECT_MASK,
        })
    }
}

/// A cookie value and mask selecting a set of flows (OpenFlow cookie/cookie_mask).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CookieFilter {
    /// Required cookie bits.
    pub cookie: u64,
    /// Which bits must equal `cookie`.
    pub mask: u64,
}

impl CookieFilter {
    /// All flows of restart round `round` (any category).
    pub fn round(round: u16) -> Self {
        CookieFilter {
            cookie: u64::from(round) << ROUND_SHIFT,
            mask: ROUND_MASK,
        }
    }

    /// All flows of `category`, in every round.
    pub fn category(category: Category) -> Self {
        CookieFilter {
            cookie: (category as u64) << CATEGORY_SHIFT,
            mask: CATEGORY_MASK,
        }
    }

    /// All flows of `category` in round `round`.
    pub fn round_category(round: u16, category: Category) -> Self {
        CookieFilter {
            cookie: Cookie::new(round, category).to_u64(),
            mask: ROUND_MASK | CATEGORY_MASK,
        }
    }

    /// All flows of one object of `category`, in every round.
    pub fn object(category: Category, object: u64) -> Self {
        CookieFilter {
            cookie: Cookie::new(0, category).with_object(object).to_u64(),
            mask: CATEGORY_MASK | OBJECT_MASK,
        }
    }

    /// All flows of the pod on OpenFlow port `ofport`, in every round.
    pub fn pod(ofport: u32) -> Self {
        Self::object(Category::Pod, u64::from(ofport))
    }

    /// Whether a flow's cookie is selected.
    pub fn selects(self, cookie: u64) -> bool {
        cookie & self.mask == self.cookie & self.mask
    }

    /// A flow-mod deleting every selected flow in every table.
    pub fn delete(self) -> FlowMod {
        FlowMod::delete_by_cookie(self.cookie, self.mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let c = Cookie::new(3, Category::Pod).with_object(5);
        assert_eq!(c.to_u64(), 0x0003_0300_0000_0005);
        assert_eq!(Cookie::from_u64(c.to_u64()), Some(c));
        let max = Cookie::new(u16::MAX, Category::Policy).with_object(u64::MAX);
        assert_eq!(max.to_u64(), 0xffff_08ff_ffff_ffff);
        assert_eq!(Cookie::from_u64(0), None, "0 is never a Weft cookie");
        assert_eq!(Cookie::from_u64(0x0001_2a00_0000_0000), None);
    }

    #[test]
    fn filters_select_exactly_their_flows() {
        let pod5_r3 = Cookie::new(3, Category::Pod).with_object(5).to_u64();
        let pod5_r4 = Cookie::new(4, Category::Pod).with_object(5).to_u64();
        let pod6_r3 = Cookie::new(3, Category::Pod).with_object(6).to_u64();
        let gw_r3 = Cookie::new(3, Category::Gateway).to_u64();

        let round3 = CookieFilter::round(3);
        assert!(round3.selects(pod5_r3) && round3.selects(pod6_r3) && round3.selects(gw_r3));
        assert!(!round3.selects(pod5_r4));

        let pod5 = CookieFilter::pod(5);
        assert!(pod5.selects(pod5_r3) && pod5.selects(pod5_r4));
        assert!(!pod5.selects(pod6_r3) && !pod5.selects(gw_r3));

        let pods = CookieFilter::category(Category::Pod);
        assert!(pods.selects(pod5_r3) && pods.selects(pod6_r3) && !pods.selects(gw_r3));

        let gw3 = CookieFilter::round_category(3, Category::Gateway);
        assert!(gw3.selects(gw_r3) && !gw3.selects(pod5_r3));
        assert_eq!(gw3.mask, 0xffff_ff00_0000_0000);
        assert_eq!(pod5.mask, 0x0000_ffff_ffff_ffff);
        assert_eq!(pod5.cookie, 0x0000_0300_0000_0005);
    }
}
