// Comparison reports: a Markdown table over runs and PNG plots (drawn by the Python helper).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace ts::experiments {

// `dirs` are variant folders (holding summary.json) or experiment folders (holding variant folders).
// Writes <out_dir>/report.md and <out_dir>/plots/*.png; returns the Markdown.
std::string write_report(const std::vector<std::filesystem::path>& dirs, const std::filesystem::path& out_dir,
                         const std::string& title);

}  // namespace ts::experiments
