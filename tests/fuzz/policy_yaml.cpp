// Fuzz target: the policy YAML loaders (policies/*.yaml), each as the vault
// loads it at open and on reload.
//
// Input: byte 0 picks the loader, the rest is the file's text:
//   0 schema.yaml       records::Schema::parse
//   1 purposes.yaml     access::Policy::load (with the shipped roles.yaml)
//   2 roles.yaml        access::Policy::load (with the shipped purposes.yaml)
//   3 regulations.yaml  dsr::Regulations::load (with the shipped calendars.yaml)
//   4 calendars.yaml    dsr::Regulations::load (with the shipped regulations.yaml)
//   5 retention.yaml    retention::Policy::load
//   6 segments.yaml     records::RfmPolicy::load
//   7 systems.yaml      outbox::Systems::load (the shipped schema's fields)
//   8 regulations.yaml  dsr::upgrade_regulations (`custos policy upgrade`)
// Invariant: a refusal is custos::Error, never of code internal; no other
// exception (a yaml-cpp or std exception escaping is a finding) and no crash.
#include <fstream>
#include <set>

#include "custos/access/policy.h"
#include "custos/dsr/regulations.h"
#include "custos/error.h"
#include "custos/outbox/systems.h"
#include "custos/records/rfm.h"
#include "custos/records/schema.h"
#include "custos/retention/retention.h"
#include "fuzz_support.h"

namespace fs = std::filesystem;
using namespace custos;

namespace {

const fs::path kShipped = fs::path(CUSTOS_SOURCE_DIR) / "policies";

struct Fixture {
  fs::path dir = fuzz::scratch_dir() / "policies";
  records::Schema schema = records::Schema::load(kShipped / "schema.yaml");
  std::set<std::string> fields;
  Fixture() {
    fs::create_directories(dir);
    for (const char* f : {"purposes.yaml", "roles.yaml", "regulations.yaml", "calendars.yaml", "retention.yaml",
                          "segments.yaml", "systems.yaml", "schema.yaml"})
      fs::copy_file(kShipped / f, dir / f, fs::copy_options::overwrite_existing);
    for (const auto& f : schema.fields()) fields.insert(f.name);
  }
  // Writes `text` as `name`, runs `load`, then puts the shipped file back.
  template <typename Load>
  void with_file(const char* name, std::string_view text, Load load) {
    {
      std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
      out.write(text.data(), static_cast<std::streamsize>(text.size()));
    }
    try {
      load();
    } catch (const Error& e) {
      FUZZ_CHECK(e.code() != ErrorCode::internal, std::string("internal error from a policy loader: ") + e.what());
    }
    fs::copy_file(kShipped / name, dir / name, fs::copy_options::overwrite_existing);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static Fixture fx;
  fuzz::InputReader in(data, size);
  const std::uint8_t loader = in.byte() % 9;
  const std::string_view text = in.rest();
  switch (loader) {
    case 0:
      try {
        (void)records::Schema::parse(std::string(text), "schema.yaml");
      } catch (const Error& e) {
        FUZZ_CHECK(e.code() != ErrorCode::internal, e.what());
      }
      break;
    case 1:
      fx.with_file("purposes.yaml", text, [&] { (void)access::Policy::load(fx.dir, fx.schema); });
      break;
    case 2:
      fx.with_file("roles.yaml", text, [&] { (void)access::Policy::load(fx.dir, fx.schema); });
      break;
    case 3:
      fx.with_file("regulations.yaml", text, [&] { (void)dsr::Regulations::load(fx.dir / "regulations.yaml"); });
      break;
    case 4:
      fx.with_file("calendars.yaml", text, [&] { (void)dsr::Regulations::load(fx.dir / "regulations.yaml"); });
      break;
    case 5:
      fx.with_file("retention.yaml", text, [&] { (void)retention::Policy::load(fx.dir / "retention.yaml"); });
      break;
    case 6:
      fx.with_file("segments.yaml", text, [&] { (void)records::RfmPolicy::load(fx.dir / "segments.yaml"); });
      break;
    case 7:
      fx.with_file("systems.yaml", text, [&] { (void)outbox::Systems::load(fx.dir / "systems.yaml", fx.fields); });
      break;
    case 8: {
      // A data dir of the previous release: its regulations.yaml, no calendars.yaml.
      const fs::path old_dir = fuzz::scratch_dir() / "upgrade";
      fs::remove_all(old_dir);
      fs::create_directories(old_dir);
      {
        std::ofstream out(old_dir / "regulations.yaml", std::ios::binary);
        out.write(text.data(), static_cast<std::streamsize>(text.size()));
      }
      try {
        (void)dsr::upgrade_regulations(old_dir, kShipped);
      } catch (const Error& e) {
        FUZZ_CHECK(e.code() != ErrorCode::internal, e.what());
      }
      break;
    }
  }
  return 0;
}
