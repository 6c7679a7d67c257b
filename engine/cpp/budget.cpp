#include "budget.h"

#include <cstdio>
#include <map>
#include <mutex>

namespace walle {

namespace {
std::mutex registry_mutex;
std::map<std::string, std::shared_ptr<Account>>& registry() {
  static auto* r = new std::map<std::string, std::shared_ptr<Account>>();  // never destroyed:
  return *r;  // deleters of tensors freed during process exit may still release into it
}
thread_local Binding tls;

std::string mib(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", double(bytes) / (1 << 20));
  return buf;
}
}  // namespace

std::shared_ptr<Account> account(const std::string& name) {
  std::lock_guard<std::mutex> g(registry_mutex);
  auto& slot = registry()[name];
  if (!slot) slot = std::make_shared<Account>(name);
  return slot;
}

const Binding& bound() { return tls; }

Binding bind(Binding b) {
  std::swap(tls, b);
  return b;
}

std::shared_ptr<Account> charge(int64_t bytes) {
  const std::shared_ptr<Account>& a = tls.account;
  if (!a) return nullptr;
  const int64_t now = a->used.fetch_add(bytes) + bytes, cap = a->cap.load();
  if (cap > 0 && now > cap) {
    a->used.fetch_sub(bytes);
    a->refused.fetch_add(1);
    throw MemoryCapExceeded("walle_engine: allocating " + mib(bytes) + " would take '" +
                            a->name + "' to " + mib(now) + " of tensor memory, over its cap of " +
                            mib(cap));
  }
  int64_t p = a->peak.load();
  while (now > p && !a->peak.compare_exchange_weak(p, now)) {
  }
  return a;
}

void release(Account& a, int64_t bytes) { a.used.fetch_sub(bytes); }

void check_cancelled() {
  if (tls.token && tls.token->cancelled.load(std::memory_order_relaxed)) {
    if (!tls.account) throw Cancelled("walle_engine: run cancelled");
    tls.account->stopped.fetch_add(1);
    throw Cancelled("walle_engine: run of '" + tls.account->name + "' cancelled");
  }
}

}  // namespace walle
