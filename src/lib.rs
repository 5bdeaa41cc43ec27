//! rentedhost-operator: rents prepaid hosts from the Xuandashi cloud for `RentedHost` objects.

pub mod api;
