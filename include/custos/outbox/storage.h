// custos/outbox/storage.h — the outbox's tables (outbox_events,
// outbox_confirmations): its migrations, for service::schema().
#pragma once

#include "custos/store/migrations.h"

namespace custos::outbox {

store::ModuleMigrations migrations();

}  // namespace custos::outbox
