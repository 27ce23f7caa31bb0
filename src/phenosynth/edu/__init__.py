"""Teaching with audited synthetic faces: scoring, practice and quiz assembly, counselling sheets (and the web app)."""
