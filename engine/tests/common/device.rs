//! The device the model tests run on (parity and precision tests; not in `common`, which the
//! coordinator's tests share without candle).

use std::sync::OnceLock;

use candle_core::Device;

/// The device the model tests load models on: `RERANK_TEST_DEVICE=cuda` for CUDA GPU 0, else
/// (unset or `cpu`) the CPU. Asking for CUDA where the build or the machine has none panics: a
/// GPU run that quietly tested the CPU would prove nothing.
pub fn test_device() -> Device {
    // One device for the whole test binary: each CUDA device carries its own stream and cuBLAS
    // handle.
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE.get_or_init(open_test_device).clone()
}

fn open_test_device() -> Device {
    match std::env::var("RERANK_TEST_DEVICE").as_deref() {
        Err(_) | Ok("" | "cpu") => Device::Cpu,
        Ok("cuda") => Device::new_cuda(0).unwrap_or_else(|e| {
            panic!(
                "RERANK_TEST_DEVICE=cuda but CUDA device 0 is unavailable: {e} \
                 (build the tests with --features cuda, run them where a GPU is)"
            )
        }),
        Ok(other) => panic!("RERANK_TEST_DEVICE={other:?}: expected cpu or cuda"),
    }
}
