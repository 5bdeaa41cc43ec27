//! What hosts cost: each account's rental package list (`packAge/1`), fetched at most once
//! per [`REFRESH`] however many objects ask, and the price of a spec from it.

use crate::api::{Price, RentalPeriod, RentedHostSpec};
use crate::provider::{Package, ProviderClient};
use parking_lot::Mutex;
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest a package list is used before it is fetched again.
pub const REFRESH: Duration = Duration::from_secs(600);
/// After a failed fetch, how long before the next try.
const RETRY: Duration = Duration::from_secs(60);

/// The provider's currency (its console bills in yuan).
pub const CURRENCY: &str = "CNY";

/// The price of `package` for `period`: `amount × discount` an hour (no discount when the
/// provider gives none), and that times the period's hours. `None` when the package has no
/// readable amount.
pub fn price_of(package: &Package, period: &RentalPeriod) -> Option<Price> {
    let amount = decimal(package.amount.as_deref()?)?;
    let discount = match package.discount.as_deref() {
        Some(d) => decimal(d)?,
        None => Decimal::ONE,
    };
    let hourly = amount.checked_mul(discount)?;
    let hours = Decimal::from(period.unit.hours()).checked_mul(Decimal::from(period.count))?;
    let total = hourly.checked_mul(hours)?;
    Some(Price {
        hourly: hourly.normalize().to_string(),
        prepaid_total: total.normalize().to_string(),
        currency: CURRENCY.into(),
    })
}

/// A decimal as the provider may send it: `"2.5"`, `2.5` (read as text), `"2.5e0"`.
fn decimal(text: &str) -> Option<Decimal> {
    let text = text.trim();
    let value = Decimal::from_str(text)
        .or_else(|_| Decimal::from_scientific(text))
        .ok()?;
    (!value.is_sign_negative()).then_some(value)
}

#[derive(Default)]
struct Listed {
    /// When the list was fetched, or a fetch failed (then `packages` is the last good list).
    at: Option<(Instant, bool)>,
    packages: Arc<HashMap<String, Package>>,
}

/// The package lists of every account.
#[derive(Default)]
pub struct PriceList {
    accounts: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Listed>>>>,
    latest: Mutex<HashMap<String, Arc<HashMap<String, Package>>>>,
}

impl PriceList {
    /// Fetches the account's list when it is older than [`REFRESH`] (a minute after a
    /// failure); concurrent callers share one fetch. A failure keeps the last good list.
    pub async fn refresh(&self, provider: &ProviderClient) {
        let slot = self
            .accounts
            .lock()
            .entry(provider.account().to_string())
            .or_default()
            .clone();
        let mut listed = slot.lock().await;
        let fresh = listed
            .at
            .is_some_and(|(at, ok)| at.elapsed() < if ok { REFRESH } else { RETRY });
        if fresh {
            return;
        }
        match provider.packages(1).await {
            Ok(packages) => {
                let by_id: HashMap<String, Package> = packages
                    .into_iter()
                    .filter_map(|p| Some((p.package_id.clone()?, p)))
                    .collect();
                listed.packages = Arc::new(by_id);
                listed.at = Some((Instant::now(), true));
                self.latest
                    .lock()
                    .insert(provider.account().to_string(), listed.packages.clone());
            }
            Err(error) => {
                tracing::debug!(%error, "reading the package list for prices failed");
                listed.at = Some((Instant::now(), false));
            }
        }
    }

    /// The price of `spec` on `account` from the list as last fetched, without waiting.
    pub fn lookup(&self, account: &str, spec: &RentedHostSpec) -> Option<Price> {
        let packages = self.latest.lock().get(account).cloned()?;
        price_of(packages.get(&spec.package_id)?, &spec.period)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PeriodUnit;

    fn package(amount: Option<&str>, discount: Option<&str>) -> Package {
        Package {
            amount: amount.map(Into::into),
            discount: discount.map(Into::into),
            ..Default::default()
        }
    }

    fn period(count: u32, unit: PeriodUnit) -> RentalPeriod {
        RentalPeriod { count, unit }
    }

    #[test]
    fn price_is_amount_times_discount_times_hours() {
        let p = price_of(
            &package(Some("2.5"), Some("0.8")),
            &period(5, PeriodUnit::Month),
        )
        .unwrap();
        assert_eq!(p.hourly, "2");
        assert_eq!(p.prepaid_total, "7200");
        assert_eq!(p.currency, "CNY");
        let p = price_of(
            &package(Some("0.1"), Some("0.3")),
            &period(3, PeriodUnit::Hour),
        )
        .unwrap();
        assert_eq!(
            (p.hourly.as_str(), p.prepaid_total.as_str()),
            ("0.03", "0.09"),
            "exact, not floats"
        );
        let p = price_of(&package(Some("1.2e1"), None), &period(1, PeriodUnit::Day)).unwrap();
        assert_eq!((p.hourly.as_str(), p.prepaid_total.as_str()), ("12", "288"));
    }

    #[test]
    fn unreadable_prices_give_none() {
        let day = period(1, PeriodUnit::Day);
        assert_eq!(price_of(&package(None, Some("1")), &day), None);
        assert_eq!(price_of(&package(Some("cheap"), Some("1")), &day), None);
        assert_eq!(price_of(&package(Some("-3"), Some("1")), &day), None);
        assert_eq!(price_of(&package(Some("3"), Some("half")), &day), None);
        let huge = "79228162514264337593543950335";
        assert_eq!(
            price_of(&package(Some(huge), Some(huge)), &day),
            None,
            "overflow"
        );
    }
}
