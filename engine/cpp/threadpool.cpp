#include "threadpool.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace walle {
namespace {

// How long a worker that finished a region keeps polling for the next one before it blocks.
// A model run is a chain of regions microseconds apart: a worker asleep on the condition
// variable is woken by a futex call and scheduled tens of microseconds later (more on a
// time-shared vCPU), by when the caller has taken every task of a small region itself. That
// made MobileNetV2's 100-200 us convolutions no faster at two threads (bench/README.md). The
// window bounds what a worker burns after the last region of a run.
constexpr auto kSpin = std::chrono::microseconds(100);

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Polls `done` until it holds or kSpin passed; the clock is read every 64 polls.
template <class F>
bool spin_until(F done) {
  const auto until = std::chrono::steady_clock::now() + kSpin;
  for (unsigned i = 1;; ++i) {
    if (done()) return true;
    cpu_relax();
    if ((i & 63) == 0 && std::chrono::steady_clock::now() >= until) return done();
  }
}

// One parallel_for call. It lives on the caller's stack; workers reach it through
// Pool::region_ only while the caller has it published.
struct Region {
  const std::function<void(int64_t)>* fn;
  int64_t tasks;
  std::atomic<int64_t> next{0};  // the next task to claim
};

// The caller never waits for a worker that has not joined: it runs every task nobody else
// claimed, then waits only for the workers inside the region (`inflight_`: running a task
// they claimed, or between entering and seeing the region gone). A worker the OS has not
// scheduled yet (on a busy host, milliseconds) costs the caller nothing.
class Pool {
 public:
  ~Pool() { resize(1); }

  void resize(int n) {
    std::lock_guard<std::mutex> own(run_mutex_);
    {
      std::lock_guard<std::mutex> g(m_);
      stop_ = true;
      generation_.fetch_add(1);
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
    stop_ = false;
    // Workers start from the current generation: reading it inside the new thread would
    // race with a run() that starts before the thread is scheduled.
    const uint64_t start = generation_.load();
    for (int i = 1; i < n; ++i) workers_.emplace_back([this, start] { loop(start); });
    size_ = n < 1 ? 1 : n;
  }

  int size() const { return size_; }

  void run(int64_t tasks, const std::function<void(int64_t)>& fn) {
    if (size_ <= 1 || tasks <= 1) {
      for (int64_t i = 0; i < tasks; ++i) fn(i);
      return;
    }
    std::unique_lock<std::mutex> own(run_mutex_, std::try_to_lock);
    if (!own.owns_lock()) {  // pool busy with another run: do it here
      for (int64_t i = 0; i < tasks; ++i) fn(i);
      return;
    }
    Region r;
    r.fn = &fn;
    r.tasks = tasks;
    region_.store(&r);
    {
      // Under m_, so a worker about to block re-checks the generation and cannot miss it.
      std::lock_guard<std::mutex> g(m_);
      generation_.fetch_add(1);
    }
    cv_.notify_all();
    work(r);
    // Every task is claimed now. Unpublish the region, then wait for the workers that reached
    // it: they finish the tasks they claimed and leave; a worker that had not reached it sees
    // it gone. The caller blocks rather than polls: it would otherwise compete for a core
    // with the worker finishing the last task (on a busy 2-vCPU host, polling here made such
    // regions wait for a whole scheduler slice).
    region_.store(nullptr);
    auto left = [&] { return inflight_.load() == 0; };
    if (!left()) {
      std::unique_lock<std::mutex> g(m_);
      done_cv_.wait(g, left);
    }
    if (error_) {  // a task threw: the caller sees it (on a worker it would terminate)
      std::exception_ptr e = error_;
      error_ = nullptr;
      std::rethrow_exception(e);
    }
  }

 private:
  void work(Region& r) {
    for (int64_t i; (i = r.next.fetch_add(1)) < r.tasks;) {
      try {
        (*r.fn)(i);
      } catch (...) {
        std::lock_guard<std::mutex> g(error_mutex_);
        if (!error_) error_ = std::current_exception();
        r.next.store(r.tasks);  // skip the remaining tasks
      }
    }
  }

  void loop(uint64_t seen) {
    for (;;) {
      auto fresh = [&] { return generation_.load() != seen; };
      if (!spin_until(fresh)) {
        std::unique_lock<std::mutex> g(m_);
        cv_.wait(g, fresh);
      }
      {
        std::lock_guard<std::mutex> g(m_);
        seen = generation_.load();
        if (stop_) return;
      }
      // seq_cst on both sides: either this load sees the region gone, or the caller's
      // read of inflight_ after unpublishing sees this worker and waits for it.
      inflight_.fetch_add(1);
      if (Region* r = region_.load()) work(*r);
      inflight_.fetch_sub(1);
      // The caller may be blocked at the join; taking m_ orders this notify after its
      // predicate check.
      std::lock_guard<std::mutex> g(m_);
      done_cv_.notify_all();
    }
  }

  std::mutex run_mutex_;  // one parallel region at a time
  std::mutex error_mutex_;
  std::exception_ptr error_;  // the first exception a task of this run threw
  std::mutex m_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> workers_;
  std::atomic<Region*> region_{nullptr};
  std::atomic<int> inflight_{0};
  std::atomic<uint64_t> generation_{0};
  bool stop_ = false;  // written and read under m_
  int size_ = 1;
};

Pool& pool() {
  // Leaked on purpose: joining threads from a static destructor at interpreter exit can
  // deadlock; the OS reclaims them.
  static Pool* p = new Pool();
  return *p;
}

}  // namespace

void set_num_threads(int n) {
  if (n < 1) n = 1;
  if (n > 256) n = 256;
  if (n != pool().size()) pool().resize(n);
}

int num_threads() { return pool().size(); }

void parallel_for(int64_t tasks, const std::function<void(int64_t)>& fn) { pool().run(tasks, fn); }

}  // namespace walle
