// Hopper's programmatic dependent launch (PDL) device functions for CUDA 11.8, pre-included into every CUDA
// source of the stand-in build (scripts/docker-build.sh adds `-include` of this file when nvcc is older
// than 12). The vendored llama.cpp turns PDL on for CUDA >= 11.8 and, in code compiled for sm_90 and newer,
// calls cudaGridDependencySynchronize() and cudaTriggerProgrammaticLaunchCompletion(); CUDA 11.8 has the
// host side of PDL (cudaLaunchKernelEx, the launch attribute) and the PTX instructions (PTX ISA 7.8), but
// its headers lack these two functions, so sm_90 did not compile. They are those PTX instructions, as CUDA
// 12's own definitions and CUTLASS's wait_on_dependent_grids/launch_dependent_grids are. With CUDA 12 or
// newer (the nvidia/cuda bases) this file is not used and would define nothing.
#pragma once

#include <cuda_runtime.h>

#if defined(__CUDACC__) && defined(CUDART_VERSION) && CUDART_VERSION < 12000

// Waits until the grids this one depends on have completed (or triggered) and their memory is visible.
static __device__ __forceinline__ void cudaGridDependencySynchronize(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Lets the dependent grid start launching before this one has completed.
static __device__ __forceinline__ void cudaTriggerProgrammaticLaunchCompletion(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

#endif
