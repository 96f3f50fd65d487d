// SentencePieceTokenizer as Megatron's _SentencePieceTokenizer (tokenizer.h): the model's pieces,
// then <CLS>, <SEP>, <EOD>, <MASK>, the pad, bos and eos pieces (or <PAD>, <BOS>, <EOS> when the
// model has none) appended when missing; these special tokens are recognised in the text (the
// earliest occurrence first) and the text between them is encoded by SentencePiece.
#include "core/check.h"
#include "data/tokenizer.h"

#ifdef TANDEM_HAVE_SENTENCEPIECE
#include <sentencepiece_processor.h>

#include <map>
#endif

namespace tandem::data {

#ifndef TANDEM_HAVE_SENTENCEPIECE

std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const std::string& model_file) {
  throw_field_error("--tokenizer-type", "SentencePieceTokenizer",
                    "this tandem was built without SentencePiece (install Debian's libsentencepiece-dev and "
                    "re-run cmake); model " +
                        model_file + " not read");
}

#else

namespace {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& path) {
    read_file_for("--tokenizer-model", path);  // names the flag when the file is missing
    const auto status = sp_.Load(path);
    if (!status.ok())
      throw UserError("--tokenizer-model = " + path + ": not a SentencePiece model (its model protobuf does not parse)");
    std::map<std::string, int32_t> vocab;
    const int n = sp_.GetPieceSize();
    for (int i = 0; i < n; ++i) vocab.emplace(sp_.IdToPiece(i), i);
    size_ = n;
    auto add = [&](const std::string& t) {
      auto [it, inserted] = vocab.emplace(t, static_cast<int32_t>(size_));
      if (inserted) ++size_;
      specials_.emplace_back(t, it->second);
      return it->second;
    };
    auto piece_or = [&](int id, const char* fallback) {
      return id >= 0 && id < n ? sp_.IdToPiece(id) : std::string(fallback);
    };
    add("<CLS>");
    add("<SEP>");
    eod_ = add("<EOD>");
    add("<MASK>");
    add(piece_or(sp_.pad_id(), "<PAD>"));
    add(piece_or(sp_.bos_id(), "<BOS>"));
    add(piece_or(sp_.eos_id(), "<EOS>"));
  }
  std::string name() const override { return "SentencePieceTokenizer"; }
  int64_t vocab_size() const override { return size_; }
  std::optional<int32_t> eod() const override { return eod_; }

  class Session final : public Encoder {
   public:
    explicit Session(const SentencePieceTokenizer& t) : t_(t) {}
    void encode(std::string_view text, std::vector<int32_t>& out) override {
      size_t at = 0;
      while (true) {
        size_t best = std::string_view::npos;
        const std::pair<std::string, int32_t>* hit = nullptr;
        for (const auto& s : t_.specials_) {  // earliest occurrence; the first listed on a tie
          const size_t k = text.find(s.first, at);
          if (k < best) {
            best = k;
            hit = &s;
          }
        }
        if (hit == nullptr) break;
        piece(text.substr(at, best - at), out);
        out.push_back(hit->second);
        at = best + hit->first.size();
      }
      piece(text.substr(at), out);
    }

   private:
    void piece(std::string_view text, std::vector<int32_t>& out) {
      ids_.clear();
      const auto status = t_.sp_.Encode(absl::string_view(text.data(), text.size()), &ids_);
      TANDEM_CHECK_MSG(status.ok(), "SentencePiece Encode: " << status.ToString());
      out.insert(out.end(), ids_.begin(), ids_.end());
    }
    const SentencePieceTokenizer& t_;
    std::vector<int> ids_;
  };
  std::unique_ptr<Encoder> make_encoder() const override { return std::make_unique<Session>(*this); }

  // Megatron's detokenize: runs of ordinary ids through SentencePiece's DecodeIds; each special
  // token written as "RUN " + "TOKEN " (the spaces are Megatron's). Ids beyond the model's pieces
  // that are no special token are skipped.
  std::string decode(std::span<const int32_t> ids) const override {
    std::string text;
    std::vector<int> run;
    auto flush = [&] {
      std::string piece;
      const auto status = sp_.Decode(run, &piece);
      TANDEM_CHECK_MSG(status.ok(), "SentencePiece Decode: " << status.ToString());
      text += piece;
      run.clear();
    };
    for (const int32_t id : ids) {
      const std::string* special = nullptr;
      for (const auto& s : specials_)
        if (s.second == id) special = &s.first;
      if (special != nullptr) {
        flush();
        text += " " + *special + " ";
      } else if (id >= 0 && id < sp_.GetPieceSize()) {
        run.push_back(id);
      }
    }
    flush();
    return text;
  }

 private:
  sentencepiece::SentencePieceProcessor sp_;
  std::vector<std::pair<std::string, int32_t> > specials_;  // in Megatron's order
  int64_t size_ = 0;
  int32_t eod_ = 0;
};

}  // namespace

std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const std::string& model_file) {
  return std::make_unique<SentencePieceTokenizer>(model_file);
}

#endif

}  // namespace tandem::data
