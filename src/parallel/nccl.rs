//! Data parallel over NCCL (the `nccl` feature): one process per GPU, launched as torchrun
//! launches workers — `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT` in the
//! environment (`scripts/launch_nccl.sh` sets them for one machine). Rank 0 creates the NCCL
//! unique id and hands it to the other ranks over a TCP connection to MASTER_ADDR:MASTER_PORT;
//! every collective then runs on candle's CUDA stream of the rank's device, so it is ordered
//! after the kernels that produced its input (cudarc's NCCL bindings, re-exported by
//! candle-core with its `nccl` feature).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::driver::{CudaSlice, CudaStream, DeviceRepr, ValidAsZeroBits};
use candle_core::cuda::cudarc::nccl::safe::{Comm as Nccl, Id, NcclType, ReduceOp};
use candle_core::{CpuStorage, CudaStorage, DType, Device, Layout, Shape, Tensor};

use super::{Comm, EnvRank};

/// One process's rank in an NCCL group.
pub struct NcclComm {
    nccl: Nccl,
    device: candle_core::CudaDevice,
}

// SAFETY: the communicator is only used from the thread that runs this process's rank (the
// trainer is single-threaded at the level of collectives); NCCL's handle is a plain pointer.
unsafe impl Send for NcclComm {}
unsafe impl Sync for NcclComm {}

fn nccl_err(e: impl std::fmt::Debug) -> anyhow::Error {
    anyhow!("nccl: {e:?}")
}

impl NcclComm {
    /// Join the group described by `env` on `device` (which must be `cuda:LOCAL_RANK`).
    pub fn new(env: &EnvRank, device: &Device) -> Result<Self> {
        let Device::Cuda(dev) = device else {
            bail!(
                "data parallel over NCCL needs a CUDA device, the recipe has {device:?}; hint: \
                 --device cuda:$LOCAL_RANK (scripts/launch_nccl.sh passes it)"
            );
        };
        let id = rendezvous(env)?;
        let nccl = Nccl::from_rank(dev.cuda_stream(), env.rank, env.world_size, id)
            .map_err(nccl_err)
            .with_context(|| {
                format!(
                    "joining the NCCL group as rank {} of {} (two ranks on one GPU are refused)",
                    env.rank, env.world_size
                )
            })?;
        Ok(Self {
            nccl,
            device: dev.clone(),
        })
    }

    fn stream(&self) -> std::sync::Arc<CudaStream> {
        self.device.cuda_stream()
    }

    fn upload<T: DeviceRepr>(&self, xs: &[T]) -> Result<CudaSlice<T>> {
        self.stream().clone_htod(xs).map_err(nccl_err)
    }

    fn download<T: DeviceRepr>(&self, xs: &CudaSlice<T>) -> Result<Vec<T>> {
        self.stream().clone_dtoh(xs).map_err(nccl_err)
    }

    fn gather<T: DeviceRepr + ValidAsZeroBits + NcclType + Copy>(
        &self,
        xs: &[T],
    ) -> Result<Vec<T>> {
        let send = self.upload(xs)?;
        let mut recv = self
            .stream()
            .alloc_zeros::<T>(xs.len() * self.nccl.world_size())
            .map_err(nccl_err)?;
        self.nccl.all_gather(&send, &mut recv).map_err(nccl_err)?;
        self.download(&recv)
    }
}

impl Comm for NcclComm {
    fn rank(&self) -> usize {
        self.nccl.rank()
    }
    fn world_size(&self) -> usize {
        self.nccl.world_size()
    }
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.contiguous()?.apply_op1_no_bwd(&AllReduce(&self.nccl))?)
    }
    fn all_reduce_sum_f64(&self, xs: &[f64]) -> Result<Vec<f64>> {
        let mut buf = self.upload(xs)?;
        self.nccl
            .all_reduce_in_place(&mut buf, &ReduceOp::Sum)
            .map_err(nccl_err)?;
        self.download(&buf)
    }
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        let lens = self.gather(&[mine.len() as u64])?;
        let max = lens.iter().copied().max().unwrap_or(0) as usize;
        let mut padded = mine.to_vec();
        padded.resize(max.max(1), 0);
        let all = self.gather(&padded)?;
        Ok(all
            .chunks(max.max(1))
            .zip(lens)
            .map(|(c, n)| c[..n as usize].to_vec())
            .collect())
    }
    fn broadcast_bytes(&self, root: usize, data: &[u8]) -> Result<Vec<u8>> {
        let mut all = self.all_gather_bytes(data)?;
        anyhow::ensure!(
            root < all.len(),
            "broadcast from rank {root} of {}",
            all.len()
        );
        Ok(all.swap_remove(root))
    }
    fn barrier(&self) -> Result<()> {
        self.all_reduce_sum_f64(&[0.0])?;
        Ok(())
    }
}

/// The NCCL unique id, made by rank 0 and sent to every other rank over TCP.
fn rendezvous(env: &EnvRank) -> Result<Id> {
    let addr = format!("{}:{}", env.master_addr, env.master_port);
    if env.rank == 0 {
        let id = Id::new().map_err(nccl_err)?;
        let bytes: Vec<u8> = id.internal().iter().map(|&c| c as u8).collect();
        let listener = TcpListener::bind(&addr)
            .with_context(|| format!("listening on MASTER_ADDR:MASTER_PORT = {addr}"))?;
        for _ in 1..env.world_size {
            let (mut peer, _) = listener.accept().context("waiting for the other ranks")?;
            peer.write_all(&bytes)?;
        }
        return Ok(id);
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        match TcpStream::connect(&addr) {
            Ok(mut s) => {
                let mut b = [0u8; 128];
                s.read_exact(&mut b)
                    .context("reading the NCCL id from rank 0")?;
                return Ok(Id::uninit(b.map(|x| x as _)));
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(500)),
            Err(e) => bail!("rank {}: no rank 0 at {addr} after 300 s: {e}", env.rank),
        }
    }
}

/// The sum over ranks of a contiguous CUDA tensor, as a candle op (no gradient).
struct AllReduce<'a>(&'a Nccl);

impl AllReduce<'_> {
    fn run<T>(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<CudaStorage>
    where
        T: candle_core::cuda_backend::CudaDType + DeviceRepr + ValidAsZeroBits + NcclType,
    {
        fn err(e: impl std::fmt::Debug) -> candle_core::Error {
            candle_core::Error::Msg(format!("nccl all-reduce: {e:?}"))
        }
        let Some((start, end)) = l.contiguous_offsets() else {
            candle_core::bail!("nccl all-reduce: the tensor must be contiguous");
        };
        let src = s.as_cuda_slice::<T>()?.slice(start..end);
        let stream = s.device.cuda_stream();
        let mut dst = stream.alloc_zeros::<T>(end - start).map_err(err)?;
        self.0
            .all_reduce(&src, &mut dst, &ReduceOp::Sum)
            .map_err(err)?;
        Ok(CudaStorage::wrap_cuda_slice(dst, s.device.clone()))
    }
}

impl candle_core::CustomOp1 for AllReduce<'_> {
    fn name(&self) -> &'static str {
        "nccl-all-reduce"
    }
    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("nccl all-reduce on a CPU tensor (the model must be on cuda)")
    }
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let out = match s.dtype() {
            DType::F32 => self.run::<f32>(s, l)?,
            DType::BF16 => self.run::<half::bf16>(s, l)?,
            DType::F16 => self.run::<half::f16>(s, l)?,
            DType::F64 => self.run::<f64>(s, l)?,
            d => candle_core::bail!("nccl all-reduce of {d:?}"),
        };
        Ok((out, l.shape().clone()))
    }
}
