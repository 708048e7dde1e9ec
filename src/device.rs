//! The compute device, chosen once: `--device` on the command line becomes a
//! [`DeviceChoice`] in the resolved configuration, [`DeviceChoice::open`] turns it into a
//! candle [`Device`], and that device is passed down to the loaders and the networks. No
//! other module names a device; data that always lives in host memory (decoded frames,
//! the TFLite and HED preprocessors' own CPU kernels, weights being merged before they are
//! placed on the device) is staged on [`host`].

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

/// Errors of choosing a device.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device {0:?}: expected `cpu`, `cuda` or `cuda:N`")]
    Unknown(String),
    #[error("device {choice}: {source}")]
    Open {
        choice: DeviceChoice,
        #[source]
        source: candle_core::Error,
    },
}

/// Where the networks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DeviceChoice {
    /// The CPU, with the hand-written kernels of `crate::nn` where they apply.
    #[default]
    Cpu,
    /// A CUDA GPU by ordinal (candle's CUDA backend; this build may not include it).
    Cuda(usize),
}

impl DeviceChoice {
    /// The candle device. A CUDA choice fails with candle's own message when this build
    /// has no CUDA backend or the GPU cannot be opened.
    pub fn open(self) -> Result<Device, DeviceError> {
        match self {
            DeviceChoice::Cpu => Ok(host()),
            DeviceChoice::Cuda(ordinal) => {
                Device::new_cuda(ordinal).map_err(|source| DeviceError::Open {
                    choice: self,
                    source,
                })
            }
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(ordinal) => write!(f, "cuda:{ordinal}"),
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = DeviceError;

    fn from_str(text: &str) -> Result<Self, DeviceError> {
        let unknown = || DeviceError::Unknown(text.to_string());
        match text.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
            other => match other.strip_prefix("cuda:") {
                Some(ordinal) => ordinal
                    .parse()
                    .map(DeviceChoice::Cuda)
                    .map_err(|_| unknown()),
                None => Err(unknown()),
            },
        }
    }
}

/// Host memory: where frames are decoded and preprocessed and where weight files are read
/// before they are placed on the chosen device.
pub fn host() -> Device {
    Device::Cpu
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_device_names_users_write() {
        assert_eq!("cpu".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!(
            "CUDA".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(0)
        );
        assert_eq!(
            "cuda:1".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(1)
        );
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
        assert!("tpu".parse::<DeviceChoice>().is_err());
        assert_eq!(DeviceChoice::Cuda(2).to_string(), "cuda:2");
    }

    #[test]
    fn cpu_opens_and_cuda_fails_cleanly_without_a_cuda_build() {
        assert!(DeviceChoice::Cpu.open().unwrap().is_cpu());
        if let Err(err) = DeviceChoice::Cuda(0).open() {
            assert!(err.to_string().starts_with("device cuda:0: "), "{err}");
        }
    }
}
