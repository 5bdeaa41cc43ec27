//! The provider's rental periods, in one table: each unit's `periodType` code, the hours a
//! prepaid total bills for it, and the span a host's expiry may show for it (the provider
//! counts months, quarters and years on the calendar).

use crate::api::PeriodUnit;

struct Row {
    unit: PeriodUnit,
    period_type: u8,
    billed_hours: u32,
    /// Shortest and longest span in hours.
    span_hours: (f64, f64),
}

const DAY: f64 = 24.0;

const TABLE: [Row; 6] = [
    Row {
        unit: PeriodUnit::Hour,
        period_type: 0,
        billed_hours: 1,
        span_hours: (1.0, 1.0),
    },
    Row {
        unit: PeriodUnit::Day,
        period_type: 1,
        billed_hours: 24,
        span_hours: (DAY, DAY),
    },
    Row {
        unit: PeriodUnit::Week,
        period_type: 2,
        billed_hours: 168,
        span_hours: (7.0 * DAY, 7.0 * DAY),
    },
    Row {
        unit: PeriodUnit::Month,
        period_type: 3,
        billed_hours: 720,
        span_hours: (28.0 * DAY, 31.0 * DAY),
    },
    Row {
        unit: PeriodUnit::Quarter,
        period_type: 4,
        billed_hours: 2160,
        span_hours: (89.0 * DAY, 92.0 * DAY),
    },
    Row {
        unit: PeriodUnit::Year,
        period_type: 5,
        billed_hours: 8760,
        span_hours: (365.0 * DAY, 366.0 * DAY),
    },
];

fn row(unit: PeriodUnit) -> &'static Row {
    TABLE
        .iter()
        .find(|r| r.unit == unit)
        .expect("the table has a row for every unit")
}

/// The provider's `periodType` code for `unit`.
pub fn period_type(unit: PeriodUnit) -> u8 {
    row(unit).period_type
}

/// Hours in one `unit`, as the prepaid total counts them.
pub fn billed_hours(unit: PeriodUnit) -> u32 {
    row(unit).billed_hours
}

/// Hours from creation to expiry of a host rented for one `unit`, as the provider may
/// count them: (shortest, longest).
pub fn span_hours(unit: PeriodUnit) -> (f64, f64) {
    row(unit).span_hours
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn period_types_follow_the_provider() {
        let units = [
            PeriodUnit::Hour,
            PeriodUnit::Day,
            PeriodUnit::Week,
            PeriodUnit::Month,
            PeriodUnit::Quarter,
            PeriodUnit::Year,
        ];
        let codes: Vec<u8> = units.iter().map(|u| period_type(*u)).collect();
        assert_eq!(codes, vec![0, 1, 2, 3, 4, 5]);
        let hours: Vec<u32> = units.iter().map(|u| billed_hours(*u)).collect();
        assert_eq!(hours, vec![1, 24, 168, 720, 2160, 8760]);
        for unit in units {
            let (short, long) = span_hours(unit);
            let billed = f64::from(billed_hours(unit));
            assert!(short <= billed && billed <= long.max(billed), "{unit}");
        }
    }
}
