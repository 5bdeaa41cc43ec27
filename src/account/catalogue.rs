//! What an account offers: its rental packages (`packAge/1`) and images, each list fetched
//! at most once per [`REFRESH`] however many objects ask, and the prices derived from the
//! package list.

use crate::api::{CreateRequest, Price, RentalPeriod};
use crate::provider::period::billed_hours;
use crate::provider::{Image, Package, ProviderClient, ProviderError};
use parking_lot::Mutex;
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest a list is used before it is fetched again.
pub const REFRESH: Duration = Duration::from_secs(600);
/// After a failed fetch of the package list for prices, how long before the next try.
const RETRY: Duration = Duration::from_secs(60);

/// The provider's currency (its console bills in yuan).
pub const CURRENCY: &str = "CNY";

/// What the catalogue says a request's host looks like.
#[derive(Debug, Clone, Default)]
pub struct Catalogued {
    pub package: Option<Package>,
    pub image: Option<Image>,
}

#[derive(Default)]
struct Packages {
    /// When the list was fetched, or a fetch failed (then `by_id` is the last good list).
    at: Option<(Instant, bool)>,
    by_id: Arc<HashMap<String, Package>>,
}

impl Packages {
    /// Fetched successfully less than [`REFRESH`] ago.
    fn fresh(&self) -> bool {
        self.at.is_some_and(|(at, ok)| ok && at.elapsed() < REFRESH)
    }

    /// Fetched less than [`REFRESH`] ago, or failed less than [`RETRY`] ago.
    fn tried_lately(&self) -> bool {
        let limit = |ok| if ok { REFRESH } else { RETRY };
        self.at.is_some_and(|(at, ok)| at.elapsed() < limit(ok))
    }
}

#[derive(Default)]
pub(super) struct Catalogue {
    /// The package list as last fetched: read without waiting.
    packages: Mutex<Packages>,
    /// Held while the package list is fetched, so that concurrent callers share one fetch
    /// (and nobody waits for it when the list is fresh).
    fetching: tokio::sync::Mutex<()>,
    images: tokio::sync::Mutex<Option<(Instant, Arc<Vec<Image>>)>>,
}

impl Catalogue {
    async fn fetch_packages(&self, client: &ProviderClient) -> Result<(), ProviderError> {
        let answer = client.packages(1).await;
        let mut listed = self.packages.lock();
        match answer {
            Ok(packages) => {
                let mut by_id = HashMap::with_capacity(packages.len());
                for package in packages {
                    if let Some(id) = package.package_id.clone() {
                        by_id.entry(id).or_insert(package);
                    }
                }
                listed.by_id = Arc::new(by_id);
                listed.at = Some((Instant::now(), true));
                Ok(())
            }
            Err(error) => {
                listed.at = Some((Instant::now(), false));
                Err(error)
            }
        }
    }

    /// Fetches the package list when it is older than [`REFRESH`] (a minute after a
    /// failure). A failure keeps the last good list.
    pub(super) async fn refresh(&self, client: &ProviderClient) {
        if self.packages.lock().tried_lately() {
            return;
        }
        let _fetching = self.fetching.lock().await;
        if self.packages.lock().tried_lately() {
            return;
        }
        if let Err(error) = self.fetch_packages(client).await {
            tracing::debug!(%error, "reading the package list for prices failed");
        }
    }

    /// The rental package with this id, from a list fetched less than [`REFRESH`] ago.
    pub(super) async fn package(
        &self,
        client: &ProviderClient,
        package_id: &str,
    ) -> Result<Option<Package>, ProviderError> {
        let from_list = |listed: &Packages| listed.by_id.get(package_id).cloned();
        {
            let listed = self.packages.lock();
            if listed.fresh() {
                return Ok(from_list(&listed));
            }
        }
        let _fetching = self.fetching.lock().await;
        if !self.packages.lock().fresh() {
            self.fetch_packages(client).await?;
        }
        Ok(from_list(&self.packages.lock()))
    }

    /// The package and image a request names.
    pub(super) async fn expected(
        &self,
        client: &ProviderClient,
        request: &CreateRequest,
    ) -> Result<Catalogued, ProviderError> {
        let package = self.package(client, &request.package_id).await?;
        let mut slot = self.images.lock().await;
        let images = match slot.as_ref().filter(|(at, _)| at.elapsed() < REFRESH) {
            Some((_, c)) => c.clone(),
            None => {
                let c = Arc::new(client.images().await?);
                *slot = Some((Instant::now(), c.clone()));
                c
            }
        };
        let image = images
            .iter()
            .find(|i| i.image_id.as_deref() == Some(request.image_id.as_str()))
            .cloned();
        Ok(Catalogued { package, image })
    }

    /// The price of `request` from the package list as last fetched, without waiting.
    pub(super) fn price(&self, request: &CreateRequest) -> Option<Price> {
        let packages = self.packages.lock().by_id.clone();
        price_of(packages.get(&request.package_id)?, &request.period)
    }
}

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
    let hours = Decimal::from(billed_hours(period.unit));
    let hours = hours.checked_mul(Decimal::from(period.count))?;
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
