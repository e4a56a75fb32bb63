// custos/service/regulations_view.h — the statutory rules as the officer
// reads them: every transport (the CLI's `custos regulations show|due`)
// renders them through these functions. They need no vault and no
// principal: they read only the loaded rule files, which are public law.
#pragma once

#include <nlohmann/json.hpp>
#include <string_view>

#include "custos/dsr/regulations.h"

namespace custos::service {

// Every rule of `regime` (a DSR and/or breach regime, by name or alias) with
// its period, conditions, calendar, citation and checked date. An empty
// `regime` lists the regimes and calendars. Error(invalid_field) for an
// unknown name, listing the valid ones.
nlohmann::json regulations_show(const dsr::Regulations& regs, std::string_view regime);

// The due dates of a request of `type` received at `received_at` (RFC 3339)
// under `regime`, without creating anything; type "breach" gives each
// recipient's clock from a discovery at `received_at`. Error(invalid_field)
// for an unknown regime or type (listing the valid ones), a malformed time,
// or a date before 1970 or after 2100.
nlohmann::json regulations_due(const dsr::Regulations& regs, std::string_view regime, std::string_view type,
                               std::string_view received_at);

}  // namespace custos::service
