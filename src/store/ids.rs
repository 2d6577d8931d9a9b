//! How the domain's id types are stored: an [`OrderId`] is a `BIGINT
//! UNSIGNED` (decoding checks it is one), a [`SagaVersion`] an `INT UNSIGNED`.

use sqlx::MySql;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::mysql::{MySqlTypeInfo, MySqlValueRef};

use crate::domain::{OrderId, SagaVersion};

impl sqlx::Type<MySql> for OrderId {
    fn type_info() -> MySqlTypeInfo {
        <u64 as sqlx::Type<MySql>>::type_info()
    }
    fn compatible(ty: &MySqlTypeInfo) -> bool {
        <u64 as sqlx::Type<MySql>>::compatible(ty)
    }
}

impl<'q> sqlx::Encode<'q, MySql> for OrderId {
    fn encode_by_ref(&self, buf: &mut Vec<u8>) -> Result<IsNull, BoxDynError> {
        <u64 as sqlx::Encode<'q, MySql>>::encode_by_ref(&self.get(), buf)
    }
}

impl<'r> sqlx::Decode<'r, MySql> for OrderId {
    fn decode(value: MySqlValueRef<'r>) -> Result<Self, BoxDynError> {
        let n = <u64 as sqlx::Decode<'r, MySql>>::decode(value)?;
        Ok(OrderId::try_from(n)?)
    }
}

impl sqlx::Type<MySql> for SagaVersion {
    fn type_info() -> MySqlTypeInfo {
        <u32 as sqlx::Type<MySql>>::type_info()
    }
    fn compatible(ty: &MySqlTypeInfo) -> bool {
        <u32 as sqlx::Type<MySql>>::compatible(ty)
    }
}

impl<'q> sqlx::Encode<'q, MySql> for SagaVersion {
    fn encode_by_ref(&self, buf: &mut Vec<u8>) -> Result<IsNull, BoxDynError> {
        <u32 as sqlx::Encode<'q, MySql>>::encode_by_ref(&self.get(), buf)
    }
}

impl<'r> sqlx::Decode<'r, MySql> for SagaVersion {
    fn decode(value: MySqlValueRef<'r>) -> Result<Self, BoxDynError> {
        <u32 as sqlx::Decode<'r, MySql>>::decode(value).map(SagaVersion)
    }
}
