#include "threadpool.h"

#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace walle {
namespace {

class Pool {
 public:
  ~Pool() { resize(1); }

  void resize(int n) {
    std::lock_guard<std::mutex> own(run_mutex_);
    {
      std::lock_guard<std::mutex> g(m_);
      stop_ = true;
      ++generation_;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
    stop_ = false;
    // Workers start from the current generation: reading it inside the new thread would
    // race with a run() that starts before the thread is scheduled, and that job would
    // then wait forever for a worker that thinks it already saw it.
    const uint64_t start = generation_;
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
    {
      std::lock_guard<std::mutex> g(m_);
      fn_ = &fn;
      tasks_ = tasks;
      next_.store(0);
      pending_ = int(workers_.size());
      ++generation_;
    }
    cv_.notify_all();
    work();
    std::unique_lock<std::mutex> g(m_);
    done_cv_.wait(g, [this] { return pending_ == 0; });
    fn_ = nullptr;
    if (error_) {  // a task threw: the caller sees it (on a worker it would terminate)
      std::exception_ptr e = error_;
      error_ = nullptr;
      std::rethrow_exception(e);
    }
  }

 private:
  void work() {
    for (int64_t i; (i = next_.fetch_add(1)) < tasks_;) {
      try {
        (*fn_)(i);
      } catch (...) {
        std::lock_guard<std::mutex> g(error_mutex_);
        if (!error_) error_ = std::current_exception();
        next_.store(tasks_);  // skip the remaining tasks
      }
    }
  }

  void loop(uint64_t seen) {
    for (;;) {
      {
        std::unique_lock<std::mutex> g(m_);
        cv_.wait(g, [&] { return generation_ != seen; });
        seen = generation_;
        if (stop_) return;
      }
      work();
      std::lock_guard<std::mutex> g(m_);
      if (--pending_ == 0) done_cv_.notify_one();
    }
  }

  std::mutex run_mutex_;  // one parallel region at a time
  std::mutex error_mutex_;
  std::exception_ptr error_;  // the first exception a task of this run threw
  std::mutex m_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> workers_;
  const std::function<void(int64_t)>* fn_ = nullptr;
  int64_t tasks_ = 0;
  std::atomic<int64_t> next_{0};
  int pending_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
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
