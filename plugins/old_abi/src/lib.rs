//! A plugin that claims plugin ABI version 99 (without sluice-sdk, which would claim the right
//! one): loading or deploying it must be refused with the version named.

/// The ABI version this "plugin" claims.
#[unsafe(no_mangle)]
pub extern "C" fn sluice_abi_version() -> u32 {
    99
}

/// Where the host would write a call's input.
#[unsafe(no_mangle)]
pub extern "C" fn sluice_input(_len: u32) -> u32 {
    0
}
