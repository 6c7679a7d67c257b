// Per-task budgets inside the engine: bytes of engine-allocated tensor memory, with a
// cap, per task; and a cancel flag per run, which model runs check between steps.
//
// Many task scripts share one device process (one isolated interpreter per task thread),
// and CPython has no per-interpreter memory limit. The engine owns the big allocations
// (tensors, model arenas), so it does the accounting: the VM binds an Account to the
// thread that runs a task, and every allocation made on that thread is charged to it
// until the memory is freed, whichever thread frees it. Accounts live in a process-wide
// registry by name, so any interpreter can look one up. Cancellation is per binding, not
// per account: two runs of one task on two threads share the account, and stopping one
// must not stop the other.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace walle {

struct Account {
  explicit Account(std::string n) : name(std::move(n)) {}
  const std::string name;
  std::atomic<int64_t> cap{0};  // bytes; 0 = no cap
  std::atomic<int64_t> used{0}, peak{0};
  std::atomic<int64_t> refused{0};  // allocations refused by the cap
  std::atomic<int64_t> stopped{0};  // model runs stopped by a cancel
};

struct CancelToken {
  std::atomic<bool> cancelled{false};
};

// An allocation would take the bound account over its cap (Python: MemoryError).
struct MemoryCapExceeded : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// The bound token was cancelled while a model ran (Python: TimeoutError).
struct Cancelled : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The registry: get or create by name.
std::shared_ptr<Account> account(const std::string& name);

// What this thread charges its allocations to, and the cancel token its model runs
// check (either may be null).
struct Binding {
  std::shared_ptr<Account> account;
  std::shared_ptr<CancelToken> token;
};
const Binding& bound();
Binding bind(Binding b);  // returns the previous binding

// Charge `bytes` to the bound account (throws MemoryCapExceeded); returns it, or null.
std::shared_ptr<Account> charge(int64_t bytes);
void release(Account& a, int64_t bytes);

// Throws Cancelled if the bound token was cancelled (and counts it on the account).
void check_cancelled();

}  // namespace walle
