"""The one toolkit optimizer plugins share, each piece defined once: parameter checks (`checks`), demos
labelled or bootstrapped from a teacher's traces (`demos`), candidate scoring and search (`search`) and
study storage URLs (`storage`). Plugins reach it through `honing.plugin_api`, never by these paths."""
