//! The freedoms `xds-api.md` leaves the provider, as switches: a client that only works
//! against one reading of the documentation fails against another, and tests pick the
//! reading from a seed so that every one is exercised across runs.

/// The order of hosts in `mypage` (the documentation names none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostOrder {
    NewestFirst,
    OldestFirst,
    /// By a hash of the id: stable across pages, unrelated to creation time.
    Unrelated,
}

/// Where `mypage` puts the total (the field list puts it per item as a string, the example
/// beside the array as a number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotalCounts {
    PageLevel,
    PerItemString,
    Both,
    Absent,
}

/// How an expired or wrong token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthorized {
    /// HTTP 200 with `code: 401` in the envelope.
    BodyCode,
    /// HTTP 401 with the same envelope.
    HttpStatus,
}

/// How `delete/{id}` answers for a host the account does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteUnknown {
    /// A non-zero code with `data: false`.
    ErrorCode,
    /// `code: 0` with `data: false`.
    FalseData,
}

/// One reading of the documentation's freedoms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freedom {
    pub order: HostOrder,
    pub totals: TotalCounts,
    /// Leave `success` out of every envelope (the seed's createRent example does).
    pub omit_success: bool,
    pub unauthorized: Unauthorized,
    /// The (undocumented) code `one/{id}` answers for a host the account does not have.
    pub unknown_host_code: i64,
    pub delete_unknown: DeleteUnknown,
    /// Send a package's `amount` and `discount` as strings (the field list) rather than
    /// numbers (the example).
    pub prices_as_text: bool,
}

impl Default for Freedom {
    /// The reading the provider's examples suggest.
    fn default() -> Self {
        Freedom {
            order: HostOrder::NewestFirst,
            totals: TotalCounts::PageLevel,
            omit_success: false,
            unauthorized: Unauthorized::BodyCode,
            unknown_host_code: 1003,
            delete_unknown: DeleteUnknown::ErrorCode,
            prices_as_text: false,
        }
    }
}

impl Freedom {
    /// A reading chosen by `seed`: each freedom varies independently.
    pub fn from_seed(seed: u64) -> Freedom {
        // splitmix64: a different, well-mixed choice for every freedom from one seed.
        let mut state = seed;
        let mut next = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let order = [
            HostOrder::NewestFirst,
            HostOrder::OldestFirst,
            HostOrder::Unrelated,
        ][(next() % 3) as usize];
        let totals = [
            TotalCounts::PageLevel,
            TotalCounts::PerItemString,
            TotalCounts::Both,
            TotalCounts::Absent,
        ][(next() % 4) as usize];
        let omit_success = next() % 2 == 0;
        let unauthorized =
            [Unauthorized::BodyCode, Unauthorized::HttpStatus][(next() % 2) as usize];
        let unknown_host_code = [1003, 404, 1001][(next() % 3) as usize];
        let delete_unknown =
            [DeleteUnknown::ErrorCode, DeleteUnknown::FalseData][(next() % 2) as usize];
        let prices_as_text = next() % 2 == 0;
        Freedom {
            order,
            totals,
            omit_success,
            unauthorized,
            unknown_host_code,
            delete_unknown,
            prices_as_text,
        }
    }

    /// Every reading that differs from the default in exactly one freedom, and the default.
    pub fn each() -> Vec<Freedom> {
        let d = Freedom::default();
        let mut all = vec![d];
        for order in [HostOrder::OldestFirst, HostOrder::Unrelated] {
            all.push(Freedom { order, ..d });
        }
        for totals in [
            TotalCounts::PerItemString,
            TotalCounts::Both,
            TotalCounts::Absent,
        ] {
            all.push(Freedom { totals, ..d });
        }
        all.push(Freedom {
            omit_success: true,
            ..d
        });
        all.push(Freedom {
            unauthorized: Unauthorized::HttpStatus,
            ..d
        });
        all.push(Freedom {
            unknown_host_code: 404,
            ..d
        });
        all.push(Freedom {
            delete_unknown: DeleteUnknown::FalseData,
            ..d
        });
        all.push(Freedom {
            prices_as_text: true,
            ..d
        });
        all
    }
}

/// A stable hash of a host id, for [`HostOrder::Unrelated`].
pub fn id_hash(id: &str) -> u64 {
    // FNV-1a: stable across processes (std's hasher is randomly keyed).
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_cover_every_choice() {
        let readings: Vec<Freedom> = (0..200).map(Freedom::from_seed).collect();
        for order in [
            HostOrder::NewestFirst,
            HostOrder::OldestFirst,
            HostOrder::Unrelated,
        ] {
            assert!(readings.iter().any(|f| f.order == order), "{order:?}");
        }
        for totals in [
            TotalCounts::PageLevel,
            TotalCounts::PerItemString,
            TotalCounts::Both,
            TotalCounts::Absent,
        ] {
            assert!(readings.iter().any(|f| f.totals == totals), "{totals:?}");
        }
        assert!(readings.iter().any(|f| f.omit_success));
        assert!(readings.iter().any(|f| f.prices_as_text));
        assert!(readings.iter().any(|f| !f.prices_as_text));
        assert!(
            readings
                .iter()
                .any(|f| f.unauthorized == Unauthorized::HttpStatus)
        );
        assert!(
            readings
                .iter()
                .any(|f| f.delete_unknown == DeleteUnknown::FalseData)
        );
        assert_eq!(Freedom::from_seed(7), Freedom::from_seed(7));
    }
}
