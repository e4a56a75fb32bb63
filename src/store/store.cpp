// What every backend shares of the store contract (custos/store/store.h):
// the plain bulk load and the read snapshot.
#include "custos/store/store.h"

#include "custos/error.h"

namespace custos::store {
namespace {

// Each transaction of the load is an ordinary write transaction.
class PlainBulkLoad final : public BulkLoad {
 public:
  explicit PlainBulkLoad(Store& store) : store_(store) {}
  std::unique_ptr<Transaction> begin() override { return store_.begin(TxMode::write); }

 private:
  Store& store_;
};

// The innermost snapshot of this thread; each links to the one it encloses.
thread_local ReadSnapshot* t_innermost = nullptr;

}  // namespace

// A read transaction that is a share of its snapshot's backend transaction.
class SharedRead final : public Transaction {
 public:
  SharedRead(std::shared_ptr<Transaction> tx, Store& store)
      : Transaction(TxMode::read), tx_(std::move(tx)), store_(store) {}

  // A read transaction has nothing to commit; the backend's ends with the
  // snapshot (or with the last share, once the sharing has ended).
  void commit() override {
    if (done_) throw Error(ErrorCode::internal, "transaction committed twice");
    done_ = true;
  }
  std::int64_t exec(std::string_view sql, Params params, const RowFn& on_row) override {
    return guarded([&] { return tx_->exec(sql, params, on_row); });
  }
  std::int64_t exec_v(std::string_view sql, const std::vector<Param>& params, const RowFn& on_row) override {
    return guarded([&] { return tx_->exec_v(sql, params, on_row); });
  }

 private:
  template <typename Run>
  std::int64_t guarded(Run run) {
    if (done_) throw Error(ErrorCode::internal, "statement on a finished transaction");
    try {
      return run();
    } catch (...) {
      // The backend transaction may be unusable now: later reads get a fresh one.
      for (ReadSnapshot* s = t_innermost; s; s = s->outer_)
        if (&s->store_ == &store_ && s->shared_ == tx_) s->shared_.reset();
      throw;
    }
  }

  std::shared_ptr<Transaction> tx_;
  Store& store_;
  bool done_ = false;
};

ReadSnapshot::ReadSnapshot(Store& store) : store_(store), outer_(t_innermost) { t_innermost = this; }

ReadSnapshot::~ReadSnapshot() {
  // Snapshots end in the reverse order of their making (they live on the stack).
  t_innermost = outer_;
}

std::unique_ptr<Transaction> Store::begin(TxMode mode) {
  if (mode != TxMode::read) {
    end_shared_reads();
    return begin_transaction(mode);
  }
  ReadSnapshot* snap = nullptr;
  for (ReadSnapshot* s = t_innermost; s; s = s->outer_)
    if (&s->store_ == this) snap = s;  // the outermost is the one shared
  if (snap == nullptr) return begin_transaction(mode);
  if (!snap->shared_) snap->shared_ = begin_transaction(TxMode::read);
  return std::make_unique<SharedRead>(snap->shared_, *this);
}

void Store::end_shared_reads() {
  for (ReadSnapshot* s = t_innermost; s; s = s->outer_)
    if (&s->store_ == this) s->shared_.reset();
}

std::unique_ptr<Transaction> Store::begin_durable() {
  end_shared_reads();
  return begin_durable_transaction();
}

std::unique_ptr<BulkLoad> Store::begin_bulk_load() {
  end_shared_reads();
  return begin_bulk_load_transactions();
}

std::unique_ptr<BulkLoad> Store::begin_bulk_load_transactions() { return std::make_unique<PlainBulkLoad>(*this); }

}  // namespace custos::store
