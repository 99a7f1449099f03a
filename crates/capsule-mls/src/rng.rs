//! Adapts the OpenMLS provider's randomness to `rand_core`, so every random byte
//! (MLS's and ours) comes from the one injectable source.

use openmls_traits::random::OpenMlsRand;

/// `rand_core` view of an OpenMLS random source.
pub(crate) struct ProviderRng<'a, R: OpenMlsRand>(pub(crate) &'a R);

#[derive(Debug)]
pub(crate) struct RandFailed;

impl core::fmt::Display for RandFailed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("provider randomness failed")
    }
}

impl core::error::Error for RandFailed {}

impl<R: OpenMlsRand> rand_core::TryRng for ProviderRng<'_, R> {
    type Error = RandFailed;

    fn try_next_u32(&mut self) -> Result<u32, RandFailed> {
        self.0.random_array::<4>().map(u32::from_le_bytes).map_err(|_| RandFailed)
    }

    fn try_next_u64(&mut self) -> Result<u64, RandFailed> {
        self.0.random_array::<8>().map(u64::from_le_bytes).map_err(|_| RandFailed)
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), RandFailed> {
        let bytes = self.0.random_vec(dst.len()).map_err(|_| RandFailed)?;
        dst.copy_from_slice(&bytes);
        Ok(())
    }
}

impl<R: OpenMlsRand> rand_core::TryCryptoRng for ProviderRng<'_, R> {}
