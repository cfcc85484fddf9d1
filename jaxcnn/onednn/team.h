// The OpenMP team that the binding's calls share: one definition for every source file
// of the library (C++17 inline variables), so convolutions and the batch-norm kernels
// wait for each other under the same policy.
#pragma once

#include <omp.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <utility>

namespace jaxcnn {

// The OpenMP team a call may use when it runs alone: OMP_NUM_THREADS, else all cores
// (read once, when the library loads, before any call changes this thread's setting).
inline const int kTeamSize = omp_get_max_threads();

// Calls in flight. XLA runs independent operations (batch slices, a layer's input and
// kernel gradients) on its own threads at once; a second OpenMP team on the same cores
// would oversubscribe them and stall both at every barrier. Two policies
// (JAXCNN_ONEDNN_OVERLAP, validated and passed in by build.py when the library loads):
// * "wait" (default): calls run one at a time, each with the whole team; a call that
//   starts while another runs sleeps on a mutex until it ends.
// * "single": a call that starts while no other runs takes the whole team; the others run
//   at once on their calling thread. Three busy threads on two cores then stall the team
//   at its barriers: the MNIST net's conv2 gradients took 6.7 ms instead of 2.2.
inline std::atomic<int> in_flight{0};
inline std::atomic<bool> overlap_single{false};
inline std::mutex one_at_a_time;

struct InFlight {
  int threads = kTeamSize;
  std::unique_lock<std::mutex> turn;  // held under "wait"; empty under "single"
  InFlight() {
    if (overlap_single.load()) {
      if (in_flight.fetch_add(1) != 0) threads = 1;
    } else {
      turn = std::unique_lock<std::mutex>(one_at_a_time);
    }
    omp_set_num_threads(threads);  // this thread's setting; oneDNN reads it below
  }
  ~InFlight() {
    if (!turn.owns_lock()) in_flight.fetch_sub(1);  // counted in only under "single"
  }
};

// Rows [lo, hi) of `rows` for thread t of nt.
inline void Share(int64_t rows, int t, int nt, int64_t& lo, int64_t& hi) {
  lo = rows * t / nt;
  hi = rows * (t + 1) / nt;
}

// Calls `body(t, r)` for every row r, the rows shared out over a team of `threads`; t is
// the calling thread's number in the team (for per-thread partial sums). kLastFirst: each
// thread takes its rows last first, so that a second pass over what a first pass just
// read starts where that pass ended, on rows still in the thread's caches.
template <bool kLastFirst = false, typename F>
void EachRow(int64_t rows, int threads, F&& body) {
#pragma omp parallel num_threads(threads)
  {
    int t = omp_get_thread_num();
    int64_t lo, hi;
    Share(rows, t, omp_get_num_threads(), lo, hi);
    if constexpr (kLastFirst) {
      for (int64_t r = hi - 1; r >= lo; --r) body(t, r);
    } else {
      for (int64_t r = lo; r < hi; ++r) body(t, r);
    }
  }
}

template <typename F>
void EachRowLastFirst(int64_t rows, int threads, F&& body) {
  EachRow<true>(rows, threads, std::forward<F>(body));
}

}  // namespace jaxcnn
