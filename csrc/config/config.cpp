#include "csrc/config/config.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

namespace ts::config {

// Optimal string alignment distance: insertions, deletions, substitutions and adjacent
// transpositions each cost 1 (so "cdua" is one edit from "cuda").
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i)
    for (size_t j = 1; j <= b.size(); ++j) {
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[a.size()][b.size()];
}

void check_path_name(const std::string& name, const std::string& what) {
  auto ok = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-'; };
  std::string why;
  if (name.empty())
    why = "must not be empty";
  else if (name.size() > kMaxNameLength)
    why = "is " + std::to_string(name.size()) + " characters long, more than " + std::to_string(kMaxNameLength);
  else if (!std::all_of(name.begin(), name.end(), ok))
    why = "may hold only letters, digits, '.', '_' and '-'";
  else if (!std::isalnum(static_cast<unsigned char>(name[0])))
    why = "must start with a letter or a digit";
  if (why.empty()) return;
  std::string shown = name.size() > 40 ? name.substr(0, 40) + "..." : name;
  for (auto& c : shown)
    if (!std::isprint(static_cast<unsigned char>(c))) c = '?';
  throw ConfigError(what + ": '" + shown + "' " + why +
                    " (it names a folder of the run: one path component, e.g. 'my_run-2')");
}

std::string Variant::where(const std::string& key) const {
  for (std::string k = key;;) {
    if (auto it = origins.find(k); it != origins.end()) return it->second;
    const auto dot = k.rfind('.');
    if (dot == std::string::npos) break;
    k = k.substr(0, dot);
  }
  return file;
}

ConfigError Variant::locate(const InvalidKeys& e) const {
  for (const auto& k : e.keys)
    if (origins.count(k)) return ConfigError(origins.at(k) + ": " + e.what());
  return ConfigError(where(e.keys.front()) + ": " + e.what());
}

namespace {

// Where each value came from: the file (with the node's line) unless an override put it there.
struct Origins {
  std::string file;
  std::map<std::string, std::string> overrides;        // key path -> "--set a.b=c" / "variant 'x'"
  mutable std::map<std::string, std::string> located;  // every key the parse met -> where()

  std::string where(const YAML::Node& n, const std::string& path) const {
    for (std::string p = path;;) {
      if (auto it = overrides.find(p); it != overrides.end()) return it->second;
      auto dot = p.rfind('.');
      if (dot == std::string::npos) break;
      p = p.substr(0, dot);
    }
    if (n.IsDefined() && n.Mark().line >= 0) return file + ":" + std::to_string(n.Mark().line + 1);
    return file;
  }
};

[[noreturn]] void fail(const std::string& where, const std::string& path, const std::string& what) {
  throw ConfigError(where + ": " + path + ": " + what);
}

std::string describe(const Range& r, bool integer) {
  std::ostringstream os;
  os << (integer ? "an integer" : "a number") << " in [" << r.lo << ", " << r.hi << "]";
  return os.str();
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

std::string nearest(const std::string& key, const std::vector<std::string>& valid) {
  std::string best;
  size_t best_d = SIZE_MAX;
  for (const auto& v : valid) {
    size_t d = edit_distance(key, v);
    if (d < best_d) best_d = d, best = v;
  }
  // Suggest only plausible neighbours (a typo, not a different word).
  return best_d <= std::max<size_t>(2, key.size() / 3) ? best : "";
}

class Parser {
 public:
  Parser(YAML::Node node, std::string prefix, const Origins& o)
      : node_(std::move(node)), prefix_(std::move(prefix)), o_(o) {}

  template <class T, class C>
  void operator()(const char* key, T& ref, const C& constraint) {
    known_.push_back(key);
    if (!node_.IsDefined() || node_.IsNull()) return;
    const YAML::Node n = node_[key];
    if (!n.IsDefined()) return;
    const std::string path = prefix_ + key;
    const std::string where = o_.where(n, path);
    o_.located[path] = where;
    if (!n.IsScalar()) fail(where, path, "expected " + expected(ref, constraint) + ", got a " + kind(n));
    convert(n.Scalar(), ref, constraint, where, path);
  }

  template <class S>
  void section(const char* key, S& s) {
    known_.push_back(key);
    YAML::Node n;
    if (node_.IsDefined() && !node_.IsNull()) n = node_[key];
    const std::string path = prefix_ + key;
    if (n.IsDefined()) o_.located[path] = o_.where(n, path);
    if (n.IsDefined() && !n.IsNull() && !n.IsMap())
      fail(o_.where(n, path), path, "expected a mapping of keys, got a " + kind(n));
    Parser sub(n.IsDefined() ? n : YAML::Node(), path + ".", o_);
    s.visit(sub);
    sub.finish();
  }

  void allow(const std::string& key) { known_.push_back(key); }

  // Any key not named by the visit is an error, with the nearest valid key.
  void finish() const {
    if (!node_.IsDefined() || !node_.IsMap()) return;
    for (const auto& kv : node_) {
      const std::string key = kv.first.as<std::string>();
      if (std::find(known_.begin(), known_.end(), key) != known_.end()) continue;
      const std::string path = prefix_ + key;
      std::string msg = "unknown key";
      if (auto s = nearest(key, known_); !s.empty()) msg += "; did you mean '" + prefix_ + s + "'?";
      msg += " (valid keys here: " + join(known_) + ")";
      fail(o_.where(kv.first, path), path, msg);
    }
  }

 private:
  static std::string kind(const YAML::Node& n) {
    if (n.IsMap()) return "mapping";
    if (n.IsSequence()) return "list";
    if (n.IsNull()) return "null";
    return "scalar";
  }
  static std::string expected(const int64_t&, const Range& r) { return describe(r, true); }
  static std::string expected(const double&, const Range& r) { return describe(r, false); }
  static std::string expected(const std::string&, const OneOf& c) { return "one of: " + join(c.values); }
  static std::string expected(const std::string&, const NoCheck&) { return "a string"; }
  static std::string expected(const bool&, const NoCheck&) { return "true or false"; }
  static std::string expected(const std::string&, const PathName&) { return "a name (letters, digits, . _ -)"; }

  static void convert(const std::string& s, int64_t& out, const Range& r, const std::string& where,
                      const std::string& path) {
    int64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size()) {
      // Accept integral floats written as 1e6.
      char* end = nullptr;
      double d = std::strtod(s.c_str(), &end);
      if (s.empty() || *end != '\0' || d != std::floor(d) || std::abs(d) > 9e15)
        fail(where, path, "expected " + describe(r, true) + ", got '" + s + "'");
      v = static_cast<int64_t>(d);
    }
    if (v < r.lo || v > r.hi) fail(where, path, "expected " + describe(r, true) + ", got " + s);
    out = v;
  }
  static void convert(const std::string& s, double& out, const Range& r, const std::string& where,
                      const std::string& path) {
    char* end = nullptr;
    double d = std::strtod(s.c_str(), &end);
    if (s.empty() || *end != '\0' || !std::isfinite(d))
      fail(where, path, "expected " + describe(r, false) + ", got '" + s + "'");
    if (d < r.lo || d > r.hi) fail(where, path, "expected " + describe(r, false) + ", got " + s);
    out = d;
  }
  static void convert(const std::string& s, std::string& out, const OneOf& c, const std::string& where,
                      const std::string& path) {
    if (std::find(c.values.begin(), c.values.end(), s) == c.values.end()) {
      std::string msg = "expected one of: " + join(c.values) + "; got '" + s + "'";
      if (auto n = nearest(s, c.values); !n.empty()) msg += "; did you mean '" + n + "'?";
      fail(where, path, msg);
    }
    out = s;
  }
  static void convert(const std::string& s, std::string& out, const NoCheck&, const std::string&, const std::string&) {
    out = s;
  }
  static void convert(const std::string& s, std::string& out, const PathName&, const std::string& where,
                      const std::string& path) {
    try {
      check_path_name(s, path);
    } catch (const ConfigError& e) {
      throw ConfigError(where + ": " + e.what());
    }
    out = s;
  }
  static void convert(const std::string& s, bool& out, const NoCheck&, const std::string& where,
                      const std::string& path) {
    if (s == "true" || s == "True")
      out = true;
    else if (s == "false" || s == "False")
      out = false;
    else
      fail(where, path, "expected true or false, got '" + s + "'");
  }

  YAML::Node node_;
  std::string prefix_;
  const Origins& o_;
  std::vector<std::string> known_;
};

class Emitter {
 public:
  explicit Emitter(YAML::Emitter& e) : e_(e) {}
  template <class T, class C>
  void operator()(const char* key, T& ref, const C&) {
    e_ << YAML::Key << key << YAML::Value << ref;
  }
  template <class S>
  void section(const char* key, S& s) {
    e_ << YAML::Key << key << YAML::Value << YAML::BeginMap;
    s.visit(*this);
    e_ << YAML::EndMap;
  }

 private:
  YAML::Emitter& e_;
};

std::vector<std::string> split_path(const std::string& key) {
  std::vector<std::string> parts;
  std::stringstream ss(key);
  for (std::string part; std::getline(ss, part, '.');) parts.push_back(part);
  return parts;
}

// Sets root[a][b]... = value, creating mappings on the way; records the origin of the path.
void set_path(YAML::Node root, const std::string& key, const YAML::Node& value, const std::string& origin, Origins& o) {
  auto parts = split_path(key);
  if (parts.empty() || std::any_of(parts.begin(), parts.end(), [](auto& p) { return p.empty(); }))
    throw ConfigError(origin + ": malformed key '" + key + "' (expected dotted keys such as train.steps)");
  YAML::Node cur = root;
  std::string prefix;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    prefix += (i ? "." : "") + parts[i];
    YAML::Node next = cur[parts[i]];
    if (!next.IsDefined() || next.IsNull()) {
      // A section this override creates: anything said of it (an unknown key, say) is said here.
      next = YAML::Node(YAML::NodeType::Map);
      cur[parts[i]] = next;
      o.overrides.emplace(prefix, origin);
    } else if (!next.IsMap()) {
      throw ConfigError(origin + ": " + key + ": '" + parts[i] + "' is a value, not a section");
    }
    cur.reset(next);
  }
  if (value.IsMap()) {
    // A nested mapping in a variant: apply each leaf so the rest of the section is kept.
    for (const auto& kv : value) set_path(root, key + "." + kv.first.as<std::string>(), kv.second, origin, o);
    return;
  }
  cur[parts.back()] = value;
  o.overrides[key] = origin;
}

// A fresh parse per variant (YAML::Clone would drop the line marks that errors cite).
YAML::Node load_without_variants(const std::string& text, const std::string& origin);

Config parse_node(const YAML::Node& root, const Origins& o) {
  Config c;
  if (root.IsDefined() && !root.IsNull() && !root.IsMap())
    throw ConfigError(o.file + ": expected a mapping of sections at the top level");
  Parser p(root, "", o);
  c.visit(p);
  p.allow("variants");
  p.finish();
  return c;
}

// A key given twice in one mapping: yaml-cpp keeps both pairs and lookups see the first, so the
// second would be ignored without a word. And a key that is not a plain name (YAML allows a list
// or a mapping as a key: "? [a, b]"), which no setting has (found by fuzz/config_fuzz.cpp).
void check_unique_keys(const YAML::Node& node, const std::string& origin) {
  if (node.IsSequence())
    for (const auto& item : node) check_unique_keys(item, origin);
  if (!node.IsMap()) return;
  std::set<std::string> keys;
  for (const auto& kv : node) {
    if (!kv.first.IsScalar())
      throw ConfigError(origin + ":" + std::to_string(kv.first.Mark().line + 1) +
                        ": a key must be a plain name, got a " +
                        (kv.first.IsSequence() ? "list"
                         : kv.first.IsMap()    ? "mapping"
                                               : "null"));
    if (!keys.insert(kv.first.Scalar()).second)
      throw ConfigError(origin + ":" + std::to_string(kv.first.Mark().line + 1) + ": duplicate key '" +
                        kv.first.Scalar() + "' (it appears earlier in the same mapping)");
    check_unique_keys(kv.second, origin);
  }
}

// Counts the documents of a YAML stream and where the second one starts, reading no further.
// (yaml-cpp's LoadAll never returns on some inputs, e.g. a lone ',': it yields empty documents
// forever without consuming it; found by fuzz/config_fuzz.cpp.)
struct DocumentCounter : YAML::EventHandler {
  int documents = 0;
  YAML::Mark second;
  void OnDocumentStart(const YAML::Mark& mark) override {
    if (++documents == 2) second = mark;
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

YAML::Node load_yaml(const std::string& text, const std::string& origin) {
  YAML::Node root;
  DocumentCounter counter;
  try {
    std::istringstream in(text);
    YAML::Parser parser(in);
    while (counter.documents < 2 && parser.HandleNextDocument(counter)) {
    }
    if (counter.documents > 0) root = YAML::Load(text);  // the first document
  } catch (const YAML::Exception& e) {
    throw ConfigError(origin + ":" + std::to_string(e.mark.line + 1) + ": invalid YAML: " + e.msg);
  }
  // Aliases share nodes, so a few lines can stand for billions of values (a "billion laughs"
  // document); every later walk would expand them. Count the values reached, with a cap.
  constexpr int64_t kMaxValues = 100000;
  int64_t values = 0;
  std::function<void(const YAML::Node&)> count = [&](const YAML::Node& n) {
    if (++values > kMaxValues)
      throw ConfigError(origin + ":" + std::to_string(n.Mark().line + 1) + ": more than " + std::to_string(kMaxValues) +
                        " values (YAML aliases expanding to a huge document?)");
    if (n.IsMap())
      for (const auto& kv : n) count(kv.first), count(kv.second);
    else if (n.IsSequence())
      for (const auto& e : n) count(e);
  };
  count(root);
  if (counter.documents > 1)
    throw ConfigError(origin + ":" + std::to_string(counter.second.line + 1) +
                      ": a second YAML document; a config is one document (remove the '---', or a stray ',' "
                      "at the top level)");
  check_unique_keys(root, origin);
  return root;
}

YAML::Node load_without_variants(const std::string& text, const std::string& origin) {
  YAML::Node out = load_yaml(text, origin);
  if (out.IsMap() && out["variants"]) out.remove("variants");
  return out;
}

}  // namespace

Config parse_config(const std::string& yaml_text, const std::string& origin) {
  Origins o{origin, {}};
  return parse_node(load_yaml(yaml_text, origin), o);
}

Experiment load_experiment(const std::string& path, const std::vector<std::string>& sets) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (std::filesystem::exists(status) && !std::filesystem::is_regular_file(status))
    throw ConfigError(path + ": expected a YAML config file, got " +
                      (std::filesystem::is_directory(status) ? "a directory" : "a device, pipe or socket"));
  std::ifstream f(path);
  if (!f) throw ConfigError(path + ": cannot read the config file (missing or unreadable)");
  // A config is a page of settings; anything this large is not one (and would be parsed whole).
  constexpr std::uintmax_t kMaxConfigBytes = 1 << 20;
  if (const auto size = std::filesystem::file_size(path, ec); !ec && size > kMaxConfigBytes)
    throw ConfigError(path + ": " + std::to_string(size) + " bytes; a config is at most 1 MiB");
  std::stringstream ss;
  ss << f.rdbuf();
  YAML::Node root = load_yaml(ss.str(), path);
  if (!root.IsDefined() || root.IsNull())
    throw ConfigError(path +
                      ": the config is empty; expected a mapping of sections (model:, train:, ...; "
                      "configs/quickstart.yaml is a small one)");
  if (!root.IsMap()) throw ConfigError(path + ": expected a mapping of sections at the top level");

  // Named variants in file order; none means one variant called "default".
  std::vector<std::pair<std::string, YAML::Node>> variant_nodes;
  if (root.IsMap() && root["variants"]) {
    YAML::Node vs = root["variants"];
    const std::string where = path + ":" + std::to_string(vs.Mark().line + 1);
    if (!vs.IsMap() || vs.size() == 0)
      throw ConfigError(where + ": variants: expected a mapping of variant name -> overrides");
    for (const auto& kv : vs) {
      if (!kv.first.IsScalar())
        throw ConfigError(path + ":" + std::to_string(kv.first.Mark().line + 1) +
                          ": variants: expected variant names, got a " + (kv.first.IsMap() ? "mapping" : "list"));
      check_path_name(kv.first.Scalar(), path + ":" + std::to_string(kv.first.Mark().line + 1) + ": variants");
      if (!kv.second.IsNull() && !kv.second.IsMap())
        throw ConfigError(path + ":" + std::to_string(kv.second.Mark().line + 1) + ": variants." +
                          kv.first.as<std::string>() + ": expected a mapping of overrides");
      variant_nodes.emplace_back(kv.first.as<std::string>(), kv.second);
    }
  } else {
    variant_nodes.emplace_back("default", YAML::Node());
  }

  Experiment ex;
  ex.path = path;
  std::set<std::string> seen;
  for (const auto& [vname, overrides] : variant_nodes) {
    if (!seen.insert(vname).second) throw ConfigError(path + ": variants: duplicate variant '" + vname + "'");
    Origins o{path, {}};
    YAML::Node node = load_without_variants(ss.str(), path);
    if (!node.IsMap()) node = YAML::Node(YAML::NodeType::Map);
    if (overrides.IsMap())
      for (const auto& kv : overrides)
        set_path(node, kv.first.as<std::string>(), kv.second,
                 path + ":" + std::to_string(kv.first.Mark().line + 1) + " (variant '" + vname + "')", o);
    for (const auto& s : sets) {
      auto eq = s.find('=');
      if (eq == std::string::npos || eq == 0)
        throw ConfigError("--set '" + s + "': expected KEY=VALUE, e.g. --set train.steps=100");
      const std::string origin = "--set " + s;
      set_path(node, s.substr(0, eq), load_yaml(s.substr(eq + 1), origin), origin, o);
    }
    Variant v{vname, parse_node(node, o), {}, path};
    v.origins = std::move(o.located);
    ex.variants.push_back(std::move(v));
  }
  return ex;
}

std::string to_yaml(const Config& c) {
  YAML::Emitter e;
  e << YAML::BeginMap;
  Emitter em(e);
  const_cast<Config&>(c).visit(em);
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

namespace {
void flatten(const YAML::Node& n, const std::string& prefix, std::map<std::string, std::string>& out) {
  if (n.IsMap()) {
    for (const auto& kv : n)
      flatten(kv.second, prefix.empty() ? kv.first.as<std::string>() : prefix + "." + kv.first.as<std::string>(), out);
    return;
  }
  YAML::Emitter e;
  e << YAML::Flow << n;
  out[prefix] = e.c_str();
}
}  // namespace

std::map<std::string, std::string> flat_values(const Config& c) {
  std::map<std::string, std::string> out;
  flatten(YAML::Load(to_yaml(c)), "", out);
  return out;
}

}  // namespace ts::config
