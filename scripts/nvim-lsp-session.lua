-- A scripted Neovim (0.7+) session against `plec lsp`, for the README's
-- editor setup: open a config with a misspelled feature (CONFIG, e.g. a copy
-- of golden/lint/unknown-feature.config), ask for hover, completion,
-- definition, symbols, the quick fix, then formatting; write what came back
-- to TRANSCRIPT. Positions are those of golden/lint/unknown-feature.config.
--   cp golden/lint/unknown-feature.config /tmp/m.config   (the transcript in
--   nvim-lsp-session.transcript.txt used /tmp/nv/model.config)
--   PLEC=target/release/plec CONFIG=/tmp/m.config TRANSCRIPT=/tmp/t.txt \
--     nvim --headless -u NONE -c "luafile scripts/nvim-lsp-session.lua"
local out = {}
local function say(s) for _, l in ipairs(vim.split(s, '\n')) do table.insert(out, l) end end
say('nvim ' .. tostring(vim.version().major) .. '.' .. tostring(vim.version().minor) .. '.' .. tostring(vim.version().patch))
vim.cmd('edit ' .. vim.env.CONFIG)
local buf = vim.api.nvim_get_current_buf()
local id = vim.lsp.start_client({ name = 'plec', cmd = { vim.env.PLEC or 'plec', 'lsp' }, root_dir = vim.fn.getcwd() })
vim.lsp.buf_attach_client(buf, id)
local client = vim.lsp.get_client_by_id(id)
local ok = vim.wait(10000, function() return #vim.diagnostic.get(buf) > 0 end, 50)
say('--- diagnostics after open (' .. tostring(ok) .. ')')
for _, d in ipairs(vim.diagnostic.get(buf)) do
  say(string.format('%d:%d severity=%d %s: %s', d.lnum + 1, d.col + 1, d.severity, d.code or '', d.message))
end
local uri = vim.uri_from_bufnr(buf)
local function req(method, params)
  local r = client.request_sync(method, params, 5000, buf)
  if not r then return 'timeout' end
  if r.err then return 'error: ' .. vim.inspect(r.err) end
  return r.result
end
local function at(line, col) return { textDocument = { uri = uri }, position = { line = line, character = col } } end
say('--- hover on hash_bucket_size (line 35)')
say(req('textDocument/hover', at(34, 6)).contents.value)
say('--- hover on "pid" in feature_names (line 86)')
say(req('textDocument/hover', at(85, 21)).contents.value)
say('--- completion inside "cat_id" (line 85)')
local items = req('textDocument/completion', at(84, 21))
local labels = {}
for _, i in ipairs(items) do table.insert(labels, i.label) end
say(table.concat(labels, ', '))
say('--- completion after group_type: (line 88)')
labels = {}
for _, i in ipairs(req('textDocument/completion', at(87, 16))) do table.insert(labels, i.label) end
say(table.concat(labels, ', '))
say('--- definition of "pid" (line 86)')
local d = req('textDocument/definition', at(85, 21))
say(string.format('%s %d:%d', d.uri, d.range.start.line + 1, d.range.start.character + 1))
say('--- document symbols')
labels = {}
for _, s in ipairs(req('textDocument/documentSymbol', { textDocument = { uri = uri } })) do table.insert(labels, s.detail .. ' ' .. s.name) end
say(table.concat(labels, ', '))
say('--- code actions on the unknown feature')
local diags = {}
for _, dd in ipairs(vim.lsp.diagnostic.get_line_diagnostics(buf, 84)) do table.insert(diags, dd) end
local actions = req('textDocument/codeAction', { textDocument = { uri = uri }, range = { start = { line = 84, character = 19 }, ['end'] = { line = 84, character = 27 } }, context = { diagnostics = diags } })
for _, a in ipairs(actions) do
  say(a.title .. ' -> ' .. vim.inspect(a.edit.changes[uri][1].newText))
  vim.lsp.util.apply_workspace_edit(a.edit, 'utf-16')
end
say('--- line 85 after applying the fix (unsaved): ' .. vim.api.nvim_buf_get_lines(buf, 84, 85, false)[1])
ok = vim.wait(10000, function()
  for _, dd in ipairs(vim.diagnostic.get(buf)) do if dd.code == 'plec::unknown-feature' then return false end end
  return true
end, 50)
say('--- diagnostics after the edit (' .. tostring(ok) .. ')')
for _, dd in ipairs(vim.diagnostic.get(buf)) do
  say(string.format('%d:%d severity=%d %s: %s', dd.lnum + 1, dd.col + 1, dd.severity, dd.code or '', dd.message))
end
say('--- formatting')
local edits = req('textDocument/formatting', { textDocument = { uri = uri }, options = { tabSize = 2, insertSpaces = true } })
say(#edits .. ' edit(s); first lines of the formatted text:')
say(table.concat(vim.list_slice(vim.split(edits[1].newText, '\n'), 7, 14), '\n'))
client.stop()
vim.fn.writefile(out, vim.env.TRANSCRIPT or 'nvim-lsp-transcript.txt')
vim.cmd('qa!')
