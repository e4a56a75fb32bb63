// Fuzz target: the policy YAML loaders (policies/*.yaml), each as the vault
// loads it at open and on reload.
//
// Input: byte 0 picks the loader, the rest is the file's text:
//   0 schema.yaml       records::Schema::parse
//   1 purposes.yaml     access::Policy::load (with the shipped roles.yaml)
//   2 roles.yaml        access::Policy::load (with the shipped purposes.yaml)
//                       (companions without their comments)
//   3 regulations.yaml  dsr::Regulations::load (with the shipped calendars.yaml,
//                       every calendar cut to its first holiday)
//   4 calendars.yaml    dsr::Regulations::load (with the shipped regulations.yaml
//                       cut to the controller and eu-gdpr)
//   5 retention.yaml    retention::Policy::load
//   6 segments.yaml     records::RfmPolicy::load
//   7 systems.yaml      outbox::Systems::load (the shipped schema's fields)
//   8 regulations.yaml  dsr::upgrade_regulations (`custos policy upgrade`), the
//                       shipped rules cut as for 4, calendars as for 3 but with
//                       the EU member states' whole
// The companions are made once per process (one directory per loader) so an
// input parses its own text and little else.
// Invariant: a refusal is custos::Error, never of code internal; no other
// exception (a yaml-cpp or std exception escaping is a finding) and no crash.
#include <yaml-cpp/yaml.h>

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

void write_text(const fs::path& file, std::string_view text) {
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
}

// The shipped regulations.yaml cut to the controller and the eu-gdpr rules
// (dsr and breach): a companion the fuzzed calendars.yaml is loaded with, and
// the "shipped" rules of the upgrade. Parsing the whole file (26 KB, 50
// regimes) under ASan took ~20 ms of every such input.
std::string thin_regulations() {
  const YAML::Node shipped = YAML::LoadFile((kShipped / "regulations.yaml").string());
  YAML::Node out;
  out["version"] = shipped["version"];
  out["controller"] = shipped["controller"];
  for (const char* section : {"dsr", "breach"}) out[section]["eu-gdpr"] = shipped[section]["eu-gdpr"];
  return YAML::Dump(out) + "\n";
}

// The shipped calendars.yaml with `keep` calendars whole and every other
// one cut to its first holiday (no extra days): every key a regime names is
// still there, at a fraction of the parse.
std::string thin_calendars(const std::set<std::string>& keep) {
  const YAML::Node shipped = YAML::LoadFile((kShipped / "calendars.yaml").string());
  YAML::Node out;
  for (const auto& kv : shipped["calendars"]) {
    const std::string key = kv.first.as<std::string>();
    YAML::Node cal = YAML::Clone(kv.second);
    if (!keep.count(key)) {
      cal.remove("extra");
      if (cal["holidays"] && cal["holidays"].size() > 1) {
        YAML::Node first;
        first.push_back(cal["holidays"][0]);
        cal["holidays"] = first;
      }
    }
    out["calendars"][key] = cal;
  }
  return YAML::Dump(out) + "\n";
}

// A loader's refusal: never internal. CUSTOS_FUZZ_VERBOSE=1 prints it (to
// check that a seed is a valid file: a refused seed stops at its first error).
void refused(const Error& e) {
  static const bool verbose = std::getenv("CUSTOS_FUZZ_VERBOSE") != nullptr;
  if (verbose) std::fprintf(stderr, "refused: %s\n", e.what());
  FUZZ_CHECK(e.code() != ErrorCode::internal, std::string("internal error from a policy loader: ") + e.what());
}

// One directory per loader: the fuzzed file is written over its own name on
// every input, beside companions that never change (so nothing is put back).
struct Fixture {
  fs::path root = fuzz::scratch_dir() / "policies";
  records::Schema schema = records::Schema::load(kShipped / "schema.yaml");
  std::set<std::string> fields;
  fs::path dir(const char* loader) const { return root / loader; }
  Fixture() {
    for (const auto& f : schema.fields()) fields.insert(f.name);
    for (const char* d : {"purposes", "roles", "regulations", "calendars", "other", "shipped"}) fs::create_directories(dir(d));
    // The shipped files without their comments (a YAML round trip): the same
    // data at a third of the parse.
    write_text(dir("purposes") / "roles.yaml", YAML::Dump(YAML::LoadFile((kShipped / "roles.yaml").string())) + "\n");
    write_text(dir("roles") / "purposes.yaml", YAML::Dump(YAML::LoadFile((kShipped / "purposes.yaml").string())) + "\n");
    const std::string regs = thin_regulations();
    write_text(dir("calendars") / "regulations.yaml", regs);
    write_text(dir("regulations") / "calendars.yaml", thin_calendars({}));
    // The upgrade's shipped rules: eu-gdpr, with the member states its
    // calendar may be matched to whole (calendar_matching compares them).
    write_text(dir("shipped") / "regulations.yaml", regs);
    write_text(dir("shipped") / "calendars.yaml", thin_calendars({"de", "de-be", "fr", "ie", "nl"}));
    // The companions must load, or every input would stop at them.
    (void)dsr::Regulations::load(dir("shipped") / "regulations.yaml");
    write_text(dir("purposes") / "purposes.yaml", YAML::Dump(YAML::LoadFile((kShipped / "purposes.yaml").string())) + "\n");
    (void)access::Policy::load(dir("purposes"), schema);
    write_text(dir("calendars") / "calendars.yaml", "");
    write_text(dir("regulations") / "regulations.yaml", "");
  }
  // Writes `text` as `file`, runs `load`.
  template <typename Load>
  void with_file(const fs::path& file, std::string_view text, Load load) {
    write_text(file, text);
    try {
      load();
    } catch (const Error& e) {
      refused(e);
    }
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
        refused(e);
      }
      break;
    case 1:
      fx.with_file(fx.dir("purposes") / "purposes.yaml", text, [&] { (void)access::Policy::load(fx.dir("purposes"), fx.schema); });
      break;
    case 2:
      fx.with_file(fx.dir("roles") / "roles.yaml", text, [&] { (void)access::Policy::load(fx.dir("roles"), fx.schema); });
      break;
    case 3:
      fx.with_file(fx.dir("regulations") / "regulations.yaml", text,
                   [&] { (void)dsr::Regulations::load(fx.dir("regulations") / "regulations.yaml"); });
      break;
    case 4:
      fx.with_file(fx.dir("calendars") / "calendars.yaml", text,
                   [&] { (void)dsr::Regulations::load(fx.dir("calendars") / "regulations.yaml"); });
      break;
    case 5:
      fx.with_file(fx.dir("other") / "retention.yaml", text, [&] { (void)retention::Policy::load(fx.dir("other") / "retention.yaml"); });
      break;
    case 6:
      fx.with_file(fx.dir("other") / "segments.yaml", text, [&] { (void)records::RfmPolicy::load(fx.dir("other") / "segments.yaml"); });
      break;
    case 7:
      fx.with_file(fx.dir("other") / "systems.yaml", text,
                   [&] { (void)outbox::Systems::load(fx.dir("other") / "systems.yaml", fx.fields); });
      break;
    case 8: {
      // A data dir of the previous release: its regulations.yaml, no
      // calendars.yaml; upgraded against the cut shipped rules.
      const fs::path old_dir = fx.root / "upgrade";
      fs::remove_all(old_dir);
      fs::create_directories(old_dir);
      write_text(old_dir / "regulations.yaml", text);
      try {
        (void)dsr::upgrade_regulations(old_dir, fx.dir("shipped"));
      } catch (const Error& e) {
        refused(e);
      }
      break;
    }
  }
  return 0;
}
