//! Where training runs: the CPU, a CUDA GPU or Apple's Metal, through candle's `cuda` and
//! `metal` cargo features (off by default, so the default build needs neither toolkit).

use std::fmt;
use std::str::FromStr;

use candle_core::Device;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::ModelError;

/// A compute device, as `--device` and `train.device` name it: `cpu`, `cuda` (GPU 0),
/// `cuda:N` or `metal`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceChoice {
    /// candle's CPU backend.
    #[default]
    Cpu,
    /// CUDA GPU number N (needs a build with `--features cuda`).
    Cuda(usize),
    /// Apple's Metal GPU (needs a build with `--features metal`).
    Metal,
}

impl DeviceChoice {
    /// Whether this build can open the device (compiled with its cargo feature).
    pub fn built_in(self) -> bool {
        match self {
            DeviceChoice::Cpu => true,
            DeviceChoice::Cuda(_) => cfg!(feature = "cuda"),
            DeviceChoice::Metal => cfg!(feature = "metal"),
        }
    }

    /// Opens the device.
    ///
    /// # Errors
    /// [`ModelError::InvalidSpec`] naming the cargo feature when this build lacks it;
    /// [`ModelError::Candle`] when the device cannot be opened (no such GPU, no driver).
    pub fn open(self) -> Result<Device, ModelError> {
        if !self.built_in() {
            let feature = match self {
                DeviceChoice::Metal => "metal",
                _ => "cuda",
            };
            return Err(ModelError::InvalidSpec(format!(
                "device {self}: this build has no {feature} support; rebuild with \
                 `cargo build --release --features {feature}`"
            )));
        }
        Ok(match self {
            DeviceChoice::Cpu => Device::Cpu,
            DeviceChoice::Cuda(n) => Device::new_cuda(n)?,
            DeviceChoice::Metal => Device::new_metal(0)?,
        })
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(0) => f.write_str("cuda"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceChoice::Metal => f.write_str("metal"),
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            "metal" => Ok(DeviceChoice::Metal),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| {
                    format!("`{other}` is not a device: use cpu, cuda, cuda:N or metal")
                }),
        }
    }
}

impl Serialize for DeviceChoice {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceChoice {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_print_and_a_missing_backend_is_a_clear_error() {
        for text in ["cpu", "cuda", "cuda:3", "metal"] {
            assert_eq!(text.parse::<DeviceChoice>().unwrap().to_string(), text);
        }
        assert_eq!("cuda:0".parse(), Ok(DeviceChoice::Cuda(0)));
        for bad in ["gpu", "cuda:", "cuda:x", ""] {
            assert!(bad.parse::<DeviceChoice>().is_err(), "{bad}");
        }
        assert!(DeviceChoice::Cpu.open().is_ok());
        if !cfg!(feature = "cuda") {
            let err = DeviceChoice::Cuda(0).open().unwrap_err().to_string();
            assert!(err.contains("--features cuda"), "{err}");
        }
        if !cfg!(feature = "metal") {
            let err = DeviceChoice::Metal.open().unwrap_err().to_string();
            assert!(err.contains("--features metal"), "{err}");
        }
    }
}
