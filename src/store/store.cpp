// What every backend shares of the store contract (custos/store/store.h).
#include "custos/store/store.h"

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

}  // namespace

std::unique_ptr<BulkLoad> Store::begin_bulk_load() { return std::make_unique<PlainBulkLoad>(*this); }

}  // namespace custos::store
